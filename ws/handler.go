package ws

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/demon-audio/demon/internal/zerowait"
	"github.com/demon-audio/demon/session"
	"github.com/gorilla/websocket"
)

// The WebSocket + HTTP server (protocol.md §1–§5, lifecycle.md L4).
//
// One Server serves DEMON's single port: any request with "Upgrade:
// websocket" becomes a session socket or an upload socket (decided by the
// first text message), whatever its path; every other request goes to the
// HTTP routes (routes.go) and the embedded page.
//
// Goroutines per session socket: the handler goroutine (handshake, then the
// session's run loop), one reader (started as soon as the config and PCM are
// in, so a vanished client is noticed even during Create), one writer
// (started when the run loop is about to start; the handshake writes inline
// before it, so nothing interleaves), and one pinger. All of them have ended
// when the handler returns.

// Options configure a Server. Only Manager is needed for sessions; zero
// values take the documented defaults.
type Options struct {
	// Manager creates and tracks sessions. Nil runs the server without a
	// generative backend: session sockets get an error frame and close 1011.
	Manager *session.Manager
	// Log receives connection and failure lines; nil discards them.
	Log *slog.Logger
	// Fixtures are the built-in tracks; nil means DemoFixtures().
	Fixtures Fixtures
	// UploadsDir is where upload_track persists tracks; "" disables uploads
	// (upload sockets get upload_failed).
	UploadsDir string
	// AllowedOrigins is the Origin allow-list for WebSocket upgrades
	// ("https://host:port" exact matches, or "*"). Empty allows same-host
	// origins, plus, on a connection that arrived on a loopback address,
	// loopback origins on any port (DEMON's own web client on
	// http://localhost:6660 talks to a local demond on another port; a
	// browser never lets a page forge its Origin, so a remote page cannot
	// pass for one). Requests without an Origin (non-browser clients) are
	// always allowed. A refused origin gets 403.
	AllowedOrigins []string
	// APIKey, if set, is required on WebSocket upgrades and the upload
	// routes, as the apiKey query parameter or "Authorization: Bearer <key>";
	// otherwise 401.
	APIKey string
	// MaxSessionsPerClient caps concurrent session sockets per remote IP
	// (default 4; negative = unlimited). Over the cap: error frame
	// server_busy, close 1013.
	MaxSessionsPerClient int
	// MaxUploadBytes caps an incoming PCM frame, for session starts and
	// uploads (default and maximum MaxInboundMessage, 100 MiB).
	MaxUploadBytes int64
	// MaxUploadSeconds truncates uploads (default 240 s, the engine limit).
	MaxUploadSeconds float64
	// MaxConcurrentUploads caps upload sockets receiving or storing a track
	// at once (default 2; negative = unlimited): each may hold a PCM frame of
	// up to MaxUploadBytes several times over while it is decoded and
	// written. Over the cap: upload_failed, close 1013.
	MaxConcurrentUploads int
	// WriteTimeout bounds every socket write (default 10 s). A message over
	// 64 KiB (the initial and swap buffers: 46 MB for 240 s) is written in
	// chunks instead, each within WriteTimeout, and the whole within
	// WriteTimeout + size/MinWriteRate.
	WriteTimeout time.Duration
	// MinWriteRate is the slowest average rate, in bytes per second, at which
	// a client may take a large message (default 128 KiB/s, about 1 Mbit/s:
	// 6 min for a 240 s buffer; a client that slow cannot stream anyway).
	MinWriteRate int64
	// PingInterval is the WebSocket ping period (default 20 s); a peer that
	// sends nothing, not even a pong, for two intervals is dropped.
	PingInterval time.Duration
	// HandshakeTimeout bounds waiting for the config and the PCM frame
	// (default 60 s).
	HandshakeTimeout time.Duration
	// OutgoingQueue is the per-connection queue capacity (default 256).
	OutgoingQueue int
	// TeardownWait bounds how long a new session start waits for sessions
	// whose client has gone to finish closing (default 10 s), so a retry never
	// races the previous session's teardown for device memory.
	TeardownWait time.Duration
	// Warmup reports the warm-up state for /api/server-info (nil → null).
	Warmup func() *WarmupStatus
	// Hooks observe traffic for metrics; every field is optional.
	Hooks Hooks
}

// WarmupStatus is /api/server-info's warmup object.
type WarmupStatus struct {
	Done    bool     `json:"done"`
	Error   *string  `json:"error"`
	Seconds *float64 `json:"seconds"`
}

// Hooks are plain metric callbacks. They are called from connection
// goroutines and must not block.
type Hooks struct {
	// BytesSent / BytesReceived count WebSocket payload bytes.
	BytesSent     func(n int)
	BytesReceived func(n int)
	// TimeToFirstAudio is the time from the upgrade to the initial buffer
	// being written (the moment the client can play).
	TimeToFirstAudio func(d time.Duration)
	// SliceLateness is, for each slice written, how far the client's
	// extrapolated playhead already is past the slice start (negative: the
	// slice arrived ahead of the playhead, as intended).
	SliceLateness func(d time.Duration)
	// StaleGap is called when a slice leaves the stretch of the track since the
	// previous slice unpatched for more than one latent frame (40 ms), with its
	// length: the client's playhead plays that stretch stale. This is an underrun
	// of fresh audio as demon-bench counts it (bench/stream.go); the client itself
	// never runs dry, it loops its buffer (spec/lifecycle.md §6.3).
	StaleGap func(d time.Duration)
	// StartFailed is called when a created session fails before it streams: its
	// handshake (the error is tagged with the stage "handshake" unless a fault point
	// says where) or its runner (*session.RunnerInitError). Create failures are reported
	// by the session manager's hooks.
	StartFailed func(err error)
	// SessionEnded is called once per session socket with its close code.
	SessionEnded func(code int)
}

// Server serves session and upload sockets and the HTTP routes.
type Server struct {
	opts     Options
	log      *slog.Logger
	mgr      *session.Manager
	fixtures Fixtures
	uploads  *uploadStore
	upgrader websocket.Upgrader
	page     http.Handler

	mu           sync.Mutex
	conns        map[*conn]struct{}
	perIP        map[string]int
	draining     bool
	shutdownCode int
	drainCh      chan struct{}   // closed when draining starts
	idle         zerowait.Signal // fired whenever conns drops to zero
	dying        int             // sessions whose client is gone, not yet closed
	dyingDone    zerowait.Signal // fired whenever dying drops to zero
	uploadSlots  chan struct{}   // one token per upload in progress; nil = unlimited

	// disableHandshakeGuard turns the handshake guard off (lifecycle L4): a
	// session that fails between Create and Run is then left open, as DEMON
	// did before PR #222. TEST ONLY: the incident test sets it to prove the
	// guard has teeth. Set before serving.
	disableHandshakeGuard bool
	// testHookStemHeaderSent, when set, runs right after the stem_assets
	// header is written. TEST ONLY: the incident test (c) uses it to make
	// "the client disconnects right after stem_assets" deterministic. Set
	// before serving.
	testHookStemHeaderSent func(ctx context.Context)
	// testHookBeforeCreate, when set, runs right before Manager.Create.
	// TEST ONLY: makes "the client speaks before the session exists"
	// deterministic. Set before serving.
	testHookBeforeCreate func(c *conn)
}

// Defaults.
const (
	DefaultMaxSessionsPerClient = 4
	DefaultWriteTimeout         = 10 * time.Second
	DefaultPingInterval         = 20 * time.Second
	DefaultHandshakeTimeout     = 60 * time.Second
	DefaultTeardownWait         = 10 * time.Second
	DefaultMinWriteRate         = 128 << 10
	DefaultMaxConcurrentUploads = 2
	// textReadLimit is the read limit for text messages while streaming.
	textReadLimit = 64 << 10
)

// NewServer validates options and returns a Server. It starts nothing: the
// caller mounts Handler() on its http.Server.
func NewServer(opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Fixtures == nil {
		opts.Fixtures = DemoFixtures()
	}
	if opts.MaxSessionsPerClient == 0 {
		opts.MaxSessionsPerClient = DefaultMaxSessionsPerClient
	}
	if opts.MaxUploadBytes <= 0 || opts.MaxUploadBytes > MaxInboundMessage {
		opts.MaxUploadBytes = MaxInboundMessage
	}
	if opts.MaxUploadSeconds <= 0 || opts.MaxUploadSeconds > 240 {
		opts.MaxUploadSeconds = 240
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.MinWriteRate <= 0 {
		opts.MinWriteRate = DefaultMinWriteRate
	}
	if opts.MaxConcurrentUploads == 0 {
		opts.MaxConcurrentUploads = DefaultMaxConcurrentUploads
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = DefaultPingInterval
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opts.OutgoingQueue <= 0 {
		opts.OutgoingQueue = DefaultQueueCapacity
	}
	if opts.TeardownWait <= 0 {
		opts.TeardownWait = DefaultTeardownWait
	}
	for _, o := range opts.AllowedOrigins {
		if o == "*" {
			continue
		}
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" {
			return nil, errors.New("ws: AllowedOrigins entry " + o + " is not scheme://host[:port] or *")
		}
	}
	s := &Server{
		opts: opts, log: opts.Log, mgr: opts.Manager, fixtures: opts.Fixtures,
		uploads: &uploadStore{dir: opts.UploadsDir}, page: webPage(),
		conns: map[*conn]struct{}{}, perIP: map[string]int{},
		drainCh: make(chan struct{}),
	}
	if opts.MaxConcurrentUploads > 0 {
		s.uploadSlots = make(chan struct{}, opts.MaxConcurrentUploads)
	}
	s.upgrader = websocket.Upgrader{
		ReadBufferSize: 32 << 10, WriteBufferSize: 64 << 10,
		HandshakeTimeout: 10 * time.Second,
		CheckOrigin:      func(*http.Request) bool { return true }, // checked before Upgrade
	}
	return s, nil
}

// Handler serves everything on one port: WebSocket upgrades (any path) and
// the HTTP routes.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if websocket.IsWebSocketUpgrade(r) {
			s.ServeWebSocket(w, r)
			return
		}
		s.ServeRoutes(w, r)
	})
}

// WebSocketHandler serves only WebSocket upgrades (other requests get 400).
func (s *Server) WebSocketHandler() http.Handler { return http.HandlerFunc(s.ServeWebSocket) }

// RoutesHandler serves only the HTTP routes and the page.
func (s *Server) RoutesHandler() http.Handler { return http.HandlerFunc(s.ServeRoutes) }

// authorized checks the API key (constant time).
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.APIKey == "" {
		return true
	}
	key := r.URL.Query().Get("apiKey")
	if h := r.Header.Get("Authorization"); key == "" && strings.HasPrefix(h, "Bearer ") {
		key = strings.TrimPrefix(h, "Bearer ")
	}
	return subtle.ConstantTimeCompare([]byte(key), []byte(s.opts.APIKey)) == 1
}

// originAllowed applies the Origin policy.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: Origin checks guard against cross-site pages only
	}
	if len(s.opts.AllowedOrigins) == 0 {
		u, err := url.Parse(origin)
		if err != nil {
			return false
		}
		return strings.EqualFold(u.Host, r.Host) || (loopbackHost(u.Hostname()) && arrivedOnLoopback(r))
	}
	return slices.ContainsFunc(s.opts.AllowedOrigins, func(o string) bool {
		return o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin)
	})
}

// loopbackHost reports whether host (no port) names this machine's
// loopback interface: "localhost" or a loopback IP.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// arrivedOnLoopback reports whether the request's connection was accepted on
// a loopback address (the server listens there, or the client is local).
func arrivedOnLoopback(r *http.Request) bool {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	host, _, err := net.SplitHostPort(a.String())
	return err == nil && loopbackHost(host)
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// ServeWebSocket upgrades the request and serves a session or upload socket.
func (s *Server) ServeWebSocket(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "400 expected a WebSocket upgrade", http.StatusBadRequest)
		return
	}
	if !s.originAllowed(r) {
		s.log.Warn("websocket origin refused", "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		http.Error(w, "403 origin not allowed", http.StatusForbidden)
		return
	}
	if !s.authorized(r) {
		s.log.Warn("websocket unauthorized", "remote", r.RemoteAddr)
		http.Error(w, "401 unauthorized", http.StatusUnauthorized)
		return
	}
	start := time.Now()
	wc, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.log.Info("websocket upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	c := newConn(s, wc, clientIP(r), start)
	if !s.addConn(c) {
		c.rejectDraining()
		return
	}
	defer s.removeConn(c)
	c.serve()
}

func (s *Server) addConn(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if len(s.conns) == 0 {
		s.idle.Fire()
	}
}

// acquireSlot counts a session socket against its client's cap.
func (s *Server) acquireSlot(ip string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.opts.MaxSessionsPerClient > 0 && s.perIP[ip] >= s.opts.MaxSessionsPerClient {
		return false
	}
	s.perIP[ip]++
	return true
}

func (s *Server) releaseSlot(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
}

// acquireUpload takes an upload slot without waiting.
func (s *Server) acquireUpload() bool {
	if s.uploadSlots == nil {
		return true
	}
	select {
	case s.uploadSlots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *Server) releaseUpload() {
	if s.uploadSlots != nil {
		<-s.uploadSlots
	}
}

// markDying / markDead track sessions whose client is gone but whose
// teardown has not finished; session starts wait for them (TeardownWait).
func (s *Server) markDying() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dying++
}

func (s *Server) markDead() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dying--; s.dying == 0 {
		s.dyingDone.Fire()
	}
}

// waitTeardowns blocks until no session is between "client gone" and
// "closed", ctx ends, or TeardownWait passes (then it proceeds; admission
// decides).
func (s *Server) waitTeardowns(ctx context.Context) {
	wctx, cancel := context.WithTimeout(ctx, s.opts.TeardownWait)
	defer cancel()
	var n int
	err := zerowait.Wait(wctx, func() (int, <-chan struct{}) {
		s.mu.Lock()
		defer s.mu.Unlock()
		n = s.dying
		return n, s.dyingDone.C()
	})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("session start proceeding while earlier sessions are still closing", "closing", n)
	}
}

// Connections returns the number of open WebSocket connections.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Shutdown drains the server: new upgrades get a server_shutdown error and
// close code, and every live socket gets {"type":"error","code":
// "server_shutdown"} and closes with code (websocket.CloseGoingAway 1001 for
// a stop, websocket.CloseServiceRestart 1012 for a restart). Sessions are
// stopped and closed before their close frame is sent. Shutdown waits for
// every connection handler to return, or ctx to end. It does not call
// Manager.Drain: the daemon does that (before or after) to stop admission of
// sessions created by other paths.
func (s *Server) Shutdown(ctx context.Context, code int) error {
	if code == 0 {
		code = websocket.CloseGoingAway
	}
	s.mu.Lock()
	if !s.draining {
		s.draining = true
		s.shutdownCode = code
		close(s.drainCh)
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.shutdown(code)
	}
	return zerowait.Wait(ctx, func() (int, <-chan struct{}) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns), s.idle.C()
	})
}

// CloseAll is Shutdown with close code 1001 and no deadline beyond ctx.
func (s *Server) CloseAll(ctx context.Context) error {
	return s.Shutdown(ctx, websocket.CloseGoingAway)
}

// drainCode returns the close code for sockets refused while draining.
func (s *Server) drainCode() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdownCode == 0 {
		return websocket.CloseGoingAway
	}
	return s.shutdownCode
}
