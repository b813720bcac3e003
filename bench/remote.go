package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/demon-audio/demon/audio"
)

// remoteTarget is a running demond reached over loopback.
type remoteTarget struct {
	base       string // http://host:port
	client     *WSClient
	deviceKind string
	deviceDesc string
	engine     string
	profile    string
	http       *http.Client
}

func newRemote(ctx context.Context, cfg Config) (*remoteTarget, error) {
	base, err := httpBase(cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("--target: %w", err)
	}
	r := &remoteTarget{base: base, http: defaultHTTP()}
	fixture := cfg.Fixture
	if fixture == "" {
		fixture = demoFor(cfg.ProfileSeconds)
	}
	useServer := false
	var info struct {
		Fixtures  []string `json:"server_side_fixtures"`
		NoBackend bool     `json:"no_backend"`
	}
	if err := r.getJSON(ctx, "/api/server-info", &info); err != nil {
		return nil, fmt.Errorf("target %s: /api/server-info: %w", base, err)
	}
	if info.NoBackend {
		return nil, fmt.Errorf("target %s runs without a generative backend", base)
	}
	if !cfg.Upload && slices.Contains(info.Fixtures, fixture) {
		useServer = true
	}
	var loras struct {
		Checkpoint string `json:"checkpoint"`
	}
	if r.getJSON(ctx, "/api/loras", &loras) == nil {
		r.profile = loras.Checkpoint
	}
	c := &WSClient{URL: cfg.Target, Fixture: fixture, UseServerFixture: useServer, Depth: cfg.Depth, Steps: cfg.Steps}
	if !useServer {
		if c.PCM, err = audio.SynthesizeDemo(fixture); err != nil {
			return nil, err
		}
	}
	r.client = c
	// The machine behind the figures, as the server names it (demon_device_info).
	text, err := r.metricsText(ctx)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", base, err)
	}
	dev, ok := metricLabels(text, "demon_device_info")
	if !ok {
		return nil, fmt.Errorf("target %s: /metrics has no demon_device_info (a demond too old to name its device)", base)
	}
	r.deviceKind, r.deviceDesc, r.engine = dev["kind"], dev["device"], dev["engine"]
	if r.engine == "" {
		r.engine = "unknown (the target reports no loaded model)"
	}
	return r, nil
}

// metricsText fetches the target's Prometheus /metrics.
func (r *remoteTarget) metricsText(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("/metrics: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// metricLabels returns the labels of the first series of name in Prometheus text
// exposition (label values unescaped: \\, \" and \n).
func metricLabels(text, name string) (map[string]string, bool) {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		labels := map[string]string{}
		for {
			key, after, ok := strings.Cut(rest, "=\"")
			if !ok {
				return labels, true
			}
			key = strings.TrimLeft(key, ", ")
			var val strings.Builder
			i := 0
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
					if after[i] == 'n' {
						val.WriteByte('\n')
						continue
					}
				}
				val.WriteByte(after[i])
			}
			labels[key] = val.String()
			if i >= len(after) {
				return labels, true
			}
			rest = after[i+1:]
		}
	}
	return nil, false
}

func (r *remoteTarget) getJSON(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// scrape reads the target's Prometheus /metrics, summing series of the same name.
func (r *remoteTarget) scrape(ctx context.Context) (map[string]float64, error) {
	text, err := r.metricsText(ctx)
	if err != nil {
		return nil, err
	}
	return parseMetrics(bufio.NewScanner(strings.NewReader(text)))
}

// parseMetrics parses Prometheus text exposition: "name{labels} value [ts]".
func parseMetrics(sc *bufio.Scanner) (map[string]float64, error) {
	out := map[string]float64{}
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		rest := ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
			rest = line[i:]
		}
		if strings.HasPrefix(rest, "{") {
			j := strings.LastIndex(rest, "}")
			if j < 0 {
				continue
			}
			rest = rest[j+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out, sc.Err()
}

func defaultHTTP() *http.Client { return &http.Client{Timeout: 10 * time.Second} }
