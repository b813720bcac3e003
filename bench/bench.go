// Package bench is demon's benchmark harness (cmd/demon-bench is its command line): it
// starts sessions in-process (a reference model repository in a temporary directory, a
// host device with a GPU-like capacity and realistic footprints, a session.Manager) or
// against a running demond over loopback (WebSocket), and runs five scenarios:
//
//   - start:  connect → ready → initial buffer → first slice, warm, p50/p95/p99;
//   - churn:  N start/stop cycles; ledger, RSS, heap, goroutines and fds over time;
//   - faults: failed starts at every session fault point, interleaved with good ones;
//     bytes leaked, retry success, cleanup time;
//   - stream: K concurrent real-time sessions; slice lateness, underruns, tick times, CPU
//     per session, and the largest K that holds real time;
//   - tick:   engine time vs everything else per tick, cgo calls and Go allocations.
//
// Results go to summary.json, summary.md and PNG plots. The package imports no fx.
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
)

// Defaults the command line shows.
const (
	DefaultDuration     = 10 * time.Second
	DefaultSearchBudget = 90 * time.Second
	DefaultTickInterval = 40 * time.Millisecond
)

// Scenario names, in run order.
var Scenarios = []string{"start", "churn", "faults", "stream", "tick"}

// Config is one benchmark run.
type Config struct {
	// Out is the output directory (created).
	Out string
	// Scenarios to run (default all).
	Scenarios []string
	// Target is a running demond's WebSocket URL (ws://127.0.0.1:1318/); empty runs in-process.
	Target string
	// ProfileSeconds and Decoder ("tiny-dit" or "oracle") choose the reference profile
	// built in-process; in remote mode they only label the results.
	ProfileSeconds int
	Decoder        string
	// ActualFootprints declares only the memory the reference math needs (default: DEMON's
	// realistic GPU footprints).
	ActualFootprints bool
	// CapacityBytes of the in-process host device (default 24 GiB).
	CapacityBytes uint64
	// Device is the in-process device kind: "host" (default: host memory accounted like a
	// GPU of CapacityBytes) or "cuda" (a GPU through the CUDA driver: every allocation is
	// real GPU memory and the reference engines stage through pinned host memory), and
	// DeviceOrdinal the GPU.
	Device        string
	DeviceOrdinal int
	// Fixture is the demo track sessions start from (default: picked for the profile).
	Fixture string
	// Upload sends the fixture as a PCM frame in WebSocket mode even if the server has it.
	Upload bool

	Sessions     int           // start: measured sessions
	WarmSessions int           // start: sessions run (and reported apart) before measuring
	Cycles       int           // churn: start/stop cycles
	ChurnSlices  int           // churn: slices each cycle streams before it stops
	FaultRounds  int           // faults: failures per point (each followed by a retry)
	OOMPoints    int           // faults: how many device.alloc=oom@N positions
	Duration     time.Duration // stream: measured window per trial
	MaxK         int           // stream: largest K tried
	SearchBudget time.Duration // stream: bound on the whole search
	TickInterval time.Duration // stream/start: session pacing (default 40 ms, demond's)
	TickIters    int           // tick: measured ticks
	Depth, Steps int           // pipeline depth and steps (4, 8)

	// NoPlots skips the PNGs.
	NoPlots bool
	// Progress receives the progress bar (nil: none).
	Progress io.Writer
	// Log receives one line per scenario (nil: none).
	Log io.Writer
}

// ProfileName is the in-process profile's name.
func (c Config) ProfileName() string { return fmt.Sprintf("bench-%ds-%s", c.ProfileSeconds, c.Decoder) }

// Defaults fills zero fields with the `make bench` profile.
func (c *Config) Defaults() {
	if len(c.Scenarios) == 0 {
		c.Scenarios = slices.Clone(Scenarios)
	}
	c.Out = cmp.Or(c.Out, "bench-out")
	c.ProfileSeconds = cmp.Or(c.ProfileSeconds, 60)
	c.Decoder = cmp.Or(c.Decoder, "tiny-dit")
	c.CapacityBytes = cmp.Or(c.CapacityBytes, 24<<30)
	c.Device = cmp.Or(c.Device, "host")
	c.Sessions = cmp.Or(c.Sessions, 12)
	c.WarmSessions = cmp.Or(c.WarmSessions, 1)
	c.Cycles = cmp.Or(c.Cycles, 60)
	c.ChurnSlices = cmp.Or(c.ChurnSlices, 1)
	c.FaultRounds = cmp.Or(c.FaultRounds, 2)
	c.OOMPoints = cmp.Or(c.OOMPoints, 4)
	c.Duration = cmp.Or(c.Duration, 10*time.Second)
	c.MaxK = cmp.Or(c.MaxK, 16)
	c.SearchBudget = cmp.Or(c.SearchBudget, 90*time.Second)
	c.TickInterval = cmp.Or(c.TickInterval, 40*time.Millisecond)
	c.TickIters = cmp.Or(c.TickIters, 100)
	c.Depth = cmp.Or(c.Depth, 4)
	c.Steps = cmp.Or(c.Steps, 8)
}

// Validate checks the configuration.
func (c Config) Validate() error {
	for _, s := range c.Scenarios {
		if !slices.Contains(Scenarios, s) {
			return fmt.Errorf("unknown scenario %q (have %s)", s, strings.Join(Scenarios, ", "))
		}
	}
	if _, err := trt.ParseDeviceKind(c.Device); err != nil {
		return fmt.Errorf("--device: %w", err)
	}
	if c.Target != "" && c.Device != "host" {
		return errors.New("--device chooses the in-process device; a --target demond uses its own")
	}
	if c.Decoder != "tiny-dit" && c.Decoder != "oracle" {
		return fmt.Errorf("decoder %q: want tiny-dit or oracle", c.Decoder)
	}
	if c.ProfileSeconds < 6 || c.ProfileSeconds > 240 {
		return fmt.Errorf("profile of %d s: want 6..240", c.ProfileSeconds)
	}
	if c.Sessions < 1 || c.Cycles < 1 || c.FaultRounds < 1 || c.TickIters < 1 || c.Duration <= 0 || c.MaxK < 1 {
		return errors.New("--sessions, --cycles, --fault-rounds, --tick-iters, --duration and --max-k must be positive")
	}
	return nil
}

// Setup says what the figures were measured on.
type Setup struct {
	Mode          string  `json:"mode"` // "in-process" or "remote"
	ClientPath    string  `json:"client_path"`
	Target        string  `json:"target,omitempty"`
	DeviceKind    string  `json:"device_kind"`
	DeviceDesc    string  `json:"device"`
	Engine        string  `json:"engine"`
	Profile       string  `json:"profile"`
	Decoder       string  `json:"decoder"`
	ProfileS      int     `json:"profile_seconds"`
	Latents       int     `json:"latent_frames"`
	Footprints    string  `json:"footprints"`
	Fixture       string  `json:"fixture"`
	Depth         int     `json:"depth"`
	Steps         int     `json:"steps"`
	TickMs        float64 `json:"tick_interval_ms"`
	RepoBuildS    float64 `json:"repo_build_s,omitempty"`
	ModelLoadS    float64 `json:"model_load_s,omitempty"`
	ServerPrimary string  `json:"server_version,omitempty"`
}

// Summary is everything one run measured (summary.json).
type Summary struct {
	Tool    string            `json:"tool"`
	Started time.Time         `json:"started"`
	WallS   float64           `json:"wall_s"`
	Machine Machine           `json:"machine"`
	Setup   Setup             `json:"setup"`
	Start   *StartResult      `json:"start,omitempty"`
	Churn   *ChurnResult      `json:"churn,omitempty"`
	Faults  *FaultsResult     `json:"faults,omitempty"`
	Stream  *StreamResult     `json:"stream,omitempty"`
	Tick    *TickResult       `json:"tick,omitempty"`
	Compare []Comparison      `json:"comparisons"`
	Skipped map[string]string `json:"skipped,omitempty"`
	Errors  map[string]string `json:"errors,omitempty"`
	Notes   []string          `json:"notes"`
	Plots   []string          `json:"plots,omitempty"`
}

// Run runs the configured scenarios and writes the outputs. A scenario that fails is
// recorded in Summary.Errors and the others still run; the error returned is the first
// scenario error (or an output error).
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	sum := &Summary{Tool: "demon-bench", Started: start.UTC(), Machine: DescribeMachine(), Skipped: map[string]string{}, Errors: map[string]string{}}
	logf := func(format string, a ...any) {
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, format+"\n", a...)
		}
	}
	sum.Setup = Setup{
		Engine: "cpu-ref (reference engines, C++ shim on the CPU)", Profile: cfg.ProfileName(), Decoder: cfg.Decoder,
		ProfileS: cfg.ProfileSeconds, Latents: cfg.ProfileSeconds * 25, Depth: cfg.Depth, Steps: cfg.Steps,
		TickMs: float64(cfg.TickInterval) / float64(time.Millisecond), Footprints: "realistic (DEMON's GPU figures)",
	}
	if cfg.ActualFootprints {
		sum.Setup.Footprints = "actual (reference math only)"
	}

	var env *Env
	var client Client
	var remote *remoteTarget
	if cfg.Target != "" {
		sum.Setup.Mode, sum.Setup.Target = "remote", cfg.Target
		var err error
		remote, err = newRemote(ctx, cfg)
		if err != nil {
			return nil, err
		}
		client = remote.client
		sum.Setup.ClientPath = client.Kind()
		sum.Setup.DeviceKind, sum.Setup.DeviceDesc = remote.deviceKind, remote.deviceDesc
		sum.Setup.Fixture = remote.client.Fixture
		if remote.profile != "" {
			sum.Setup.Profile = remote.profile + " (reported by the server)"
		}
		sum.Setup.Engine = remote.engine
	} else {
		sum.Setup.Mode = "in-process"
		logf("building the reference repository and loading the model (%s)...", cfg.ProfileName())
		var err error
		env, err = NewEnv(cfg)
		if err != nil {
			return nil, err
		}
		defer env.Close()
		sum.Setup.DeviceKind = env.Dev.Kind().String()
		sum.Setup.DeviceDesc = env.Dev.String()
		if env.Dev.Kind() == trt.DeviceCUDA {
			sum.Setup.Engine = "cpu-ref (reference engines, C++ shim on the CPU, staged through pinned host memory to and from GPU memory)"
		}
		sum.Setup.Fixture = env.Fixture
		sum.Setup.RepoBuildS, sum.Setup.ModelLoadS = env.BuildTime.Seconds(), env.LoadTime.Seconds()
		sum.Setup.ClientPath = "websocket (in-process ws.Server on a loopback httptest listener); start also via the session API; faults via the session API (create.*, session.init.context, run.runner_init, device.alloc) and the WebSocket (handshake.*)"
		sum.Notes = append(sum.Notes, "in-process: the benchmark client and the server share one process (and its CPUs): client-side work (slice header parsing, params at 25 Hz) is counted in CPU per session and competes with the sessions.")
	}

	var firstErr error
	for _, name := range Scenarios {
		if !slices.Contains(cfg.Scenarios, name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		logf("scenario %s...", name)
		t0 := time.Now()
		var err error
		switch name {
		case "start":
			sum.Start, err = runStart(ctx, cfg, env, client)
		case "churn":
			sum.Churn, err = runChurn(ctx, cfg, env, remote)
		case "faults":
			if env == nil {
				sum.Skipped[name] = "needs the in-process fault registry and device ledger (remote demond: arm DEMON_FAILPOINTS there)"
				continue
			}
			sum.Faults, err = runFaults(ctx, cfg, env)
		case "stream":
			sum.Stream, err = runStream(ctx, cfg, env, client)
		case "tick":
			if env == nil {
				sum.Skipped[name] = "needs the engine's own timing (in-process only)"
				continue
			}
			sum.Tick, err = runTick(ctx, cfg, env)
		}
		logf("scenario %s: %s", name, time.Since(t0).Round(100*time.Millisecond))
		if err != nil {
			sum.Errors[name] = err.Error()
			logf("scenario %s failed: %v", name, err)
			if firstErr == nil {
				firstErr = fmt.Errorf("scenario %s: %w", name, err)
			}
		}
	}
	sum.Compare = comparisons(sum)
	sum.WallS = time.Since(start).Seconds()
	if !cfg.NoPlots {
		plots, err := writePlots(cfg.Out, sum)
		sum.Plots = plots
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("plots: %w", err)
		}
	}
	if err := writeJSON(filepath.Join(cfg.Out, "summary.json"), sum); err != nil {
		return sum, err
	}
	if err := os.WriteFile(filepath.Join(cfg.Out, "summary.md"), []byte(Markdown(sum)), 0o644); err != nil {
		return sum, err
	}
	return sum, firstErr
}

var _ = models.Hop
