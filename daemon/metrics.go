package daemon

// The metrics module owns demond's Prometheus registry and serves it on /metrics. It
// registers what every module contributes to the "collectors" value group (AsCollector),
// so a module exports its metrics without knowing about the registry, and the registry
// is not shared with anyone (no global prometheus.DefaultRegisterer).
//
// Native state (the device ledger, fault-point hits, NVML) is read at scrape time by
// custom collectors instead of being copied into gauges on a timer: a scrape always sees
// the ledger as it is, and nothing runs between scrapes. Those collectors return nothing
// while their service is not started. The scrape path is safe against the services
// stopping because the HTTP server depends on these collectors (through the /metrics
// route), so it starts after and stops before them; Shutdown waits for running scrapes.
//
// Names follow Prometheus practice: demon_ prefix, base units (seconds, bytes, ratios),
// _total on counters.

import (
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/fx"

	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt"
)

// Version is demond's version as exported in demon_build_info. Release builds set it
// with -ldflags "-X github.com/demon-audio/demon/daemon.Version=v1.2.3"; otherwise it
// comes from the Go build information ("devel" when there is none).
var Version = ""

// AsCollector annotates a constructor so that its result joins the "collectors" value
// group the metrics module registers, e.g. fx.Provide(AsCollector(newPoolCollector)).
func AsCollector(f any) any {
	return fx.Annotate(f, fx.As(new(prometheus.Collector)), fx.ResultTags(`group:"collectors"`))
}

// sessionFailureSeries are the {window, point} pairs demon_sessions_failed_total is
// initialised with, so each series exists from boot: every fault point at which a session
// start can fail (windows W2–W5 of lifecycle.md §8.2), a request refused before any
// allocation (W-1), and a handshake that failed without a fault point.
func sessionFailureSeries() [][2]string {
	series := [][2]string{{"W-1", "create.source_prepare"}, {"W4", "handshake"}}
	for _, p := range trt.FaultPoints() {
		switch w := session.PointWindow(p); w {
		case "W2", "W3", "W4", "W5":
			series = append(series, [2]string{w, p})
		}
	}
	return series
}

// Metrics holds the session-level metrics. They are registered when the metrics module
// starts the registry, so every series exists from boot (at zero) even before the first
// session. The session and WebSocket modules depend on *Metrics and update the fields.
type Metrics struct {
	// SessionsActive is the number of sessions streaming now (demon_sessions_active).
	SessionsActive prometheus.Gauge
	// SessionsStarted counts sessions that reached running (demon_sessions_started_total).
	SessionsStarted prometheus.Counter
	// SessionsFailed counts failed session starts by failure window (lifecycle.md §2.2)
	// and the fault point or stage they failed at (demon_sessions_failed_total{window,
	// point}); FailedStart labels an error.
	SessionsFailed *prometheus.CounterVec
	// SessionsRefused counts sessions refused by admission (demon_sessions_refused_total).
	SessionsRefused prometheus.Counter
	// SessionStart observes how long creating a session took, from its config message to
	// the session that the ready frame announces (demon_session_start_seconds).
	SessionStart prometheus.Histogram
	// TimeToFirstAudio observes seconds from the WebSocket upgrade to the initial buffer
	// written, the moment the client can play (demon_session_time_to_first_audio_seconds).
	TimeToFirstAudio prometheus.Histogram
	// TickDuration observes the duration of one pipeline tick (demon_tick_duration_seconds).
	TickDuration prometheus.Histogram
	// DecodeDuration observes the duration of one VAE decode (demon_decode_duration_seconds).
	DecodeDuration prometheus.Histogram
	// SliceLateness observes how late a slice was sent against its playback deadline;
	// on-time slices observe 0 (demon_slice_lateness_seconds).
	SliceLateness prometheus.Histogram
	// Underruns counts slices that left the stretch of the track since the previous
	// slice unpatched for more than one latent frame, so the client played it stale: an
	// underrun of fresh audio as demon-bench counts it. A late slice is not one: the
	// client never runs dry, it loops its buffer (lifecycle.md §6.3); SliceLateness
	// counts late slices (demon_underruns_total).
	Underruns prometheus.Counter
	// UnderrunStale counts the seconds of track those gaps left stale
	// (demon_underrun_stale_seconds_total).
	UnderrunStale prometheus.Counter
	// WebSocketSentBytes counts bytes sent on session WebSockets
	// (demon_websocket_sent_bytes_total).
	WebSocketSentBytes prometheus.Counter
	// WebSocketReceivedBytes counts bytes received on session WebSockets
	// (demon_websocket_received_bytes_total).
	WebSocketReceivedBytes prometheus.Counter
}

// NewMetrics creates the session-level metrics (unregistered; the metrics module
// registers them).
func NewMetrics() *Metrics {
	// Cold starts take ~40 s, warm ones 5–6 s (lifecycle.md §4).
	startBuckets := []float64{0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300}
	// A tick or decode is a few to tens of milliseconds on the GPU.
	fastBuckets := []float64{.001, .0025, .005, .0075, .01, .015, .02, .03, .05, .075, .1, .15, .25, .5, 1, 2.5}
	m := &Metrics{
		SessionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "demon_sessions_active", Help: "Sessions streaming now."}),
		SessionsStarted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "demon_sessions_started_total", Help: "Sessions that reached running."}),
		SessionsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "demon_sessions_failed_total", Help: "Session starts that failed, by failure window (lifecycle.md §2.2: W0 is the boot warmup) and the fault point or stage they failed at."},
			[]string{"window", "point"}),
		SessionsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "demon_sessions_refused_total", Help: "Sessions refused by admission."}),
		SessionStart: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "demon_session_start_seconds", Help: "Time to create a session, from its config to ready.", Buckets: startBuckets}),
		TimeToFirstAudio: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "demon_session_time_to_first_audio_seconds", Help: "Time from the WebSocket upgrade to the initial buffer written (the client can play).", Buckets: startBuckets}),
		TickDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "demon_tick_duration_seconds", Help: "Duration of one pipeline tick.", Buckets: fastBuckets}),
		DecodeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "demon_decode_duration_seconds", Help: "Duration of one VAE decode.", Buckets: fastBuckets}),
		SliceLateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "demon_slice_lateness_seconds", Help: "How late a slice was sent against its deadline (0 when on time).",
			Buckets: []float64{0, .001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}),
		Underruns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "demon_underruns_total", Help: "Slices that left more than one latent frame (40 ms) of the track since the previous slice unpatched, so the client played it stale (late slices: demon_slice_lateness_seconds)."}),
		UnderrunStale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "demon_underrun_stale_seconds_total", Help: "Seconds of track that underruns left unpatched (played stale)."}),
		WebSocketSentBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "demon_websocket_sent_bytes_total", Help: "Bytes sent on session WebSockets."}),
		WebSocketReceivedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "demon_websocket_received_bytes_total", Help: "Bytes received on session WebSockets."}),
	}
	for _, wp := range sessionFailureSeries() {
		m.SessionsFailed.WithLabelValues(wp[0], wp[1])
	}
	return m
}

// FailedStart counts a failed session start under its window and point.
func (m *Metrics) FailedStart(err error) {
	m.SessionsFailed.WithLabelValues(session.FailureWindow(err), session.ErrorWindow(err)).Inc()
}

// FailedWarmup counts a failed boot warmup (window W0) under the point it failed at.
func (m *Metrics) FailedWarmup(err error) {
	m.SessionsFailed.WithLabelValues("W0", session.ErrorWindow(err)).Inc()
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.SessionsActive, m.SessionsStarted, m.SessionsFailed, m.SessionsRefused,
		m.SessionStart, m.TimeToFirstAudio, m.TickDuration, m.DecodeDuration,
		m.SliceLateness, m.Underruns, m.UnderrunStale, m.WebSocketSentBytes, m.WebSocketReceivedBytes,
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

// buildVersion resolves the version label of demon_build_info.
func buildVersion() string {
	if Version != "" {
		return Version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}

func newBuildInfoCollector() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "demon_build_info",
		Help:        "Always 1; the labels say which demond this is.",
		ConstLabels: prometheus.Labels{"version": buildVersion(), "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
}

// deviceCollector reads the device ledger at scrape time.
type deviceCollector struct {
	svc                                     *DeviceService
	used, capacity, peak, live, owner, kind *prometheus.Desc
	allocs, frees, failed                   *prometheus.Desc
	driverUsed                              *prometheus.Desc
}

func newDeviceCollector(svc *DeviceService) *deviceCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &deviceCollector{
		svc:      svc,
		used:     d("demon_device_memory_used_bytes", "Device memory in use, from the ledger."),
		capacity: d("demon_device_memory_capacity_bytes", "Device memory the device may hand out."),
		peak:     d("demon_device_memory_peak_bytes", "Peak device memory in use since start (or the last peak reset)."),
		live:     d("demon_device_live_handles", "Native handles (buffers, engines, contexts, ...) alive on the device."),
		owner:    d("demon_device_owner_memory_used_bytes", "Device memory in use per owner tag (a session id, model:decoder, ...).", "owner"),
		kind:     d("demon_device_kind_memory_used_bytes", "Device memory in use per handle kind (buffer, engine, ...).", "kind"),
		allocs:   d("demon_device_allocations_total", "Device allocations that succeeded."),
		frees:    d("demon_device_frees_total", "Device allocations freed."),
		failed:   d("demon_device_allocation_failures_total", "Device allocations that failed (out of memory or injected)."),
		driverUsed: d("demon_device_driver_memory_used_bytes",
			"Device memory in use according to the driver (cuda: cuMemGetInfo total − free, every process and the CUDA context included; host: the ledger)."),
	}
}

// Describe implements prometheus.Collector.
func (c *deviceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.used, c.capacity, c.peak, c.live, c.owner, c.kind, c.allocs, c.frees, c.failed, c.driverUsed} {
		ch <- d
	}
}

// Collect implements prometheus.Collector; it exports nothing before start.
func (c *deviceCollector) Collect(ch chan<- prometheus.Metric) {
	dev := c.svc.Device()
	if dev == nil {
		return
	}
	l, err := dev.Ledger()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.used, err)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	t := l.Totals
	gauge(c.used, float64(t.UsedBytes))
	gauge(c.capacity, float64(t.CapacityBytes))
	gauge(c.peak, float64(t.PeakBytes))
	gauge(c.live, float64(t.LiveHandles))
	for _, o := range l.ByOwner {
		gauge(c.owner, float64(o.UsedBytes), o.Name)
	}
	for _, k := range l.ByKind {
		gauge(c.kind, float64(k.UsedBytes), k.Name)
	}
	counter(c.allocs, t.Allocations)
	counter(c.frees, t.Frees)
	counter(c.failed, t.Failed)
	if free, total, err := dev.DriverMemory(); err == nil {
		gauge(c.driverUsed, float64(total-free))
	}
}

// faultsCollector exports how often each declared fault point was hit.
type faultsCollector struct {
	svc  *FaultsService
	hits *prometheus.Desc
}

func newFaultsCollector(svc *FaultsService) *faultsCollector {
	return &faultsCollector{svc: svc, hits: prometheus.NewDesc("demon_fault_point_hits_total",
		"Times each fault point was reached (armed or not; docs/faultpoints.md).", []string{"point"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *faultsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.hits }

// Collect implements prometheus.Collector; it exports nothing before start.
func (c *faultsCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.svc.Faults()
	if f == nil {
		return
	}
	for _, p := range trt.FaultPoints() {
		if n := f.Hits(p); n >= 0 {
			ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(n), p)
		}
	}
}

// RegistryParams are the metrics registry's dependencies.
type RegistryParams struct {
	fx.In
	Collectors []prometheus.Collector `group:"collectors"`
}

// newRegistry registers every contributed collector; a duplicate or inconsistent
// collector is a start-up error naming it.
func newRegistry(p RegistryParams) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for i, c := range p.Collectors {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics collector %d (%T): %w", i, c, err)
		}
	}
	return reg, nil
}

func newMetricsRoute(reg *prometheus.Registry, log *slog.Logger) Route {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:      reg, // demon's own promhttp_* metrics
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError, // one failing collector must not hide the rest
	})
	return RouteFunc("GET /metrics", h.ServeHTTP)
}

// MetricsModule owns the Prometheus registry (private to it), registers the "collectors"
// value group, serves /metrics, and provides *Metrics for the session modules. It
// contributes the Go and process collectors, demon_build_info, the device ledger and
// fault-point hit counts.
var MetricsModule = fx.Module("metrics",
	fx.Provide(fx.Private, newRegistry),
	fx.Provide(NewMetrics),
	fx.Provide(
		AsCollector(func(m *Metrics) *Metrics { return m }),
		AsCollector(newBuildInfoCollector),
		AsCollector(func() prometheus.Collector { return collectors.NewGoCollector() }),
		AsCollector(func() prometheus.Collector {
			return collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})
		}),
		AsCollector(newDeviceCollector),
		AsCollector(newFaultsCollector),
	),
	fx.Provide(AsRoute(newMetricsRoute)),
)
