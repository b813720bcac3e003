package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

// metricValue returns the value of the sample whose name and labels are exactly series,
// e.g. `demon_device_owner_memory_used_bytes{owner="x"}`.
func metricValue(t *testing.T, text, series string) (float64, bool) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v, true
}

func scrape(t *testing.T, srv *Server) string {
	t.Helper()
	rec := serve(srv.Handler(), http.MethodGet, "/metrics")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	return rec.Body.String()
}

func TestMetricsExportedAndDeviceGaugesFollowTheLedger(t *testing.T) {
	trttest.NoLeaks(t)
	var (
		srv *Server
		dev *DeviceService
		m   *Metrics
	)
	app := fxtest.New(t, Modules(serviceConfig(t), slog.New(slog.DiscardHandler)), fx.Populate(&srv, &dev, &m))
	app.RequireStart()
	defer app.RequireStop()

	text := scrape(t, srv)
	for _, name := range []string{
		"demon_build_info", "demon_device_memory_used_bytes", "demon_device_memory_capacity_bytes",
		"demon_device_memory_peak_bytes", "demon_device_live_handles", "demon_fault_point_hits_total",
		"demon_device_allocations_total", "demon_device_allocation_failures_total",
		"demon_sessions_active", "demon_sessions_started_total", "demon_sessions_failed_total",
		"demon_sessions_refused_total", "demon_session_start_seconds", "demon_session_time_to_first_audio_seconds",
		"demon_tick_duration_seconds", "demon_decode_duration_seconds", "demon_slice_lateness_seconds",
		"demon_underruns_total", "demon_underrun_stale_seconds_total", "demon_websocket_sent_bytes_total", "demon_websocket_received_bytes_total",
		"go_goroutines", "process_resident_memory_bytes",
	} {
		assert.Regexp(t, `(?m)^# TYPE `+name+` `, text, name)
	}
	assert.Regexp(t, `(?m)^demon_build_info\{goversion="go[^"]+",version="[^"]+"\} 1$`, text)
	assert.Regexp(t, `(?m)^demon_sessions_failed_total\{point="handshake.stem_payload",window="W4"\} 0$`, text)
	assert.Regexp(t, `(?m)^demon_session_start_seconds_count 0$`, text)
	hits, ok := metricValue(t, text, `demon_fault_point_hits_total{point="device.create"}`)
	require.True(t, ok, "fault point hits exported")
	assert.Equal(t, 1.0, hits)
	capacity, _ := metricValue(t, text, "demon_device_memory_capacity_bytes")
	assert.Equal(t, float64(64<<20), capacity)

	base, ok := metricValue(t, text, "demon_device_memory_used_bytes")
	require.True(t, ok)
	baseHandles, _ := metricValue(t, text, "demon_device_live_handles")

	b, err := dev.Device().Alloc(3<<20, "test:metrics")
	require.NoError(t, err)
	tot, err := dev.Device().Totals()
	require.NoError(t, err)
	text = scrape(t, srv)
	used, _ := metricValue(t, text, "demon_device_memory_used_bytes")
	assert.Equal(t, float64(tot.UsedBytes), used)
	assert.GreaterOrEqual(t, used-base, float64(3<<20))
	owner, ok := metricValue(t, text, `demon_device_owner_memory_used_bytes{owner="test:metrics"}`)
	require.True(t, ok, text)
	assert.GreaterOrEqual(t, owner, float64(3<<20))
	handles, _ := metricValue(t, text, "demon_device_live_handles")
	assert.Equal(t, baseHandles+1, handles)
	peak, _ := metricValue(t, text, "demon_device_memory_peak_bytes")
	assert.GreaterOrEqual(t, peak, used)

	require.NoError(t, b.Close())
	text = scrape(t, srv)
	used, _ = metricValue(t, text, "demon_device_memory_used_bytes")
	assert.Equal(t, base, used)
	_, ok = metricValue(t, text, `demon_device_owner_memory_used_bytes{owner="test:metrics"}`)
	assert.False(t, ok, "an owner holding nothing is not exported")

	// Session metrics move when a module updates them.
	m.SessionsActive.Inc()
	m.FailedStart(&session.StageError{Stage: "handshake", Err: errors.New("broken pipe")})
	text = scrape(t, srv)
	v, _ := metricValue(t, text, "demon_sessions_active")
	assert.Equal(t, 1.0, v)
	v, _ = metricValue(t, text, `demon_sessions_failed_total{point="handshake",window="W4"}`)
	assert.Equal(t, 1.0, v)
}

func collectCount(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}

func TestNativeCollectorsAreEmptyBeforeStart(t *testing.T) {
	assert.Zero(t, collectCount(newDeviceCollector(&DeviceService{})))
	assert.Zero(t, collectCount(newFaultsCollector(&FaultsService{})))
}

func TestDuplicateCollectorFailsTheGraph(t *testing.T) {
	err := fx.New(Modules(serviceConfig(t), slog.New(slog.DiscardHandler)), fx.NopLogger,
		fx.Provide(AsCollector(NewMetrics))).Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "register metrics collector")
}

// Failed starts are labelled with their window of lifecycle.md §2.2 by the stage or fault
// point they failed at (§8.2), and with that point.
func TestFailedStartLabels(t *testing.T) {
	faults, err := trt.NewFaults("")
	require.NoError(t, err)
	defer faults.Close()
	injected := func(point string) error {
		require.NoError(t, faults.Arm(point+"=error"))
		defer func() { require.NoError(t, faults.Arm(point+"=off")) }()
		err := faults.Hit(point)
		require.Error(t, err)
		return err
	}
	stage := func(name string, err error) error { return &session.StageError{Stage: name, Err: err} }
	cases := []struct {
		name          string
		err           error
		window, point string
	}{
		{"fault point in create", injected("create.conditioning"), "W3", "create.conditioning"},
		{"device fault inside a create stage", stage("create.stream", injected("device.alloc")), "W3", "device.alloc"},
		{"engine session", stage("session.init", errors.New("out of memory")), "W2", "session.init"},
		{"bad source, before any allocation", stage("create.source_prepare", fmt.Errorf("%w: silence", session.ErrBadRequest)), "W-1", "create.source_prepare"},
		{"bad request before any stage", fmt.Errorf("%w: 0 channels", session.ErrBadRequest), "W-1", "unknown"},
		{"prompt too long, after allocations", stage("create.conditioning", fmt.Errorf("%w: prompt too long", session.ErrBadRequest)), "W3", "create.conditioning"},
		{"handshake send failed", stage("handshake", errors.New("broken pipe")), "W4", "handshake"},
		{"handshake fault point", stage("handshake", injected("handshake.stem_payload")), "W4", "handshake.stem_payload"},
		{"runner construction", &session.RunnerInitError{Err: injected("run.runner_init")}, "W5", "run.runner_init"},
		{"runner construction, no point", &session.RunnerInitError{Err: errors.New("oom")}, "W5", "unknown"},
		{"nothing says", errors.New("mystery"), "unknown", "unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.window, session.FailureWindow(tc.err))
			assert.Equal(t, tc.point, session.ErrorWindow(tc.err))
			m := NewMetrics()
			m.FailedStart(tc.err)
			assert.Equal(t, map[string]float64{tc.window + " " + tc.point: 1}, failedSeries(t, m, true))
		})
	}
	// Every fault point a start can fail at has its series from boot; runtime (W6) and
	// teardown (W7) points are not start failures.
	series := failedSeries(t, NewMetrics(), false)
	for _, want := range []string{
		"W-1 create.source_prepare", "W2 session.init.context", "W3 create.stems", "W3 create.finalize",
		"W4 handshake", "W4 handshake.stem_payload", "W5 run.runner_init",
	} {
		assert.Contains(t, series, want)
	}
	for s, v := range series {
		assert.Zero(t, v, s)
		assert.NotRegexp(t, `^(W6|W7|unknown) `, s, "runtime and teardown points are not start failures")
	}
}

// failedSeries returns demon_sessions_failed_total's series as "window point" → value
// (only the non-zero ones when nonZero).
func failedSeries(t *testing.T, m *Metrics, nonZero bool) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, mt := range gather(t, m)["demon_sessions_failed_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range mt.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if v := mt.GetCounter().GetValue(); v != 0 || !nonZero {
			out[labels["window"]+" "+labels["point"]] = v
		}
	}
	return out
}

// A failed boot warmup counts under W0 with the point it failed at, not under the window
// the same point has for a client's session.
func TestWarmupFailureCountsUnderW0(t *testing.T) {
	trttest.NoLeaks(t)
	var srv *Server
	cfg := serviceConfig(t, "--device-capacity", "2GiB", "--warmup=true", "--failpoints", "create.conditioning=error@1")
	app := fxtest.New(t, Modules(cfg, slog.New(slog.DiscardHandler)), fx.Populate(&srv))
	app.RequireStart()
	defer app.RequireStop()
	text := scrape(t, srv)
	v, ok := metricValue(t, text, `demon_sessions_failed_total{point="create.conditioning",window="W0"}`)
	assert.True(t, ok, text)
	assert.Equal(t, 1.0, v)
	v, _ = metricValue(t, text, `demon_sessions_failed_total{point="create.conditioning",window="W3"}`)
	assert.Zero(t, v)
}
