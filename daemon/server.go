package daemon

// The HTTP module owns demond's one public listener, which serves plain HTTP (health,
// metrics, the browser's /api/* endpoints) and the session WebSocket on the same port,
// as protocol.md §10.1 requires. Nothing here knows the routes: modules contribute them
// through the "routes" value group (AsRoute), so the server does not import the modules
// that own the handlers.
//
// A browser opens its session WebSocket on any path (the client uses "/"), so the session
// handler cannot be found by path alone. A route that also implements UpgradeRoute
// claims every request whose Upgrade header names its protocol, before path routing;
// such a route may return "" from Pattern to be reachable by upgrade only.
//
// Paths are served as written: http.ServeMux would answer a path that is not canonical
// (".." or "." segments, doubled slashes, including their %-encoded forms) with a redirect
// to its cleaned form, which turns /fixtures/../x or /user_uploads/..%2F..%2Fetc%2Fpasswd
// into a 307 to somewhere else. The router refuses such paths itself: 404 and a log line,
// like the protocol server's own track-name checks (protocol.md §1.2: unknown paths 404).
//
// Ordering: the server is constructed after every route owner (it depends on them), so
// its OnStart runs after theirs (nothing is served before the device exists) and its
// OnStop runs before theirs: Shutdown stops accepting and waits for in-flight requests
// (scrapes included), and only then do the modules behind the routes stop. Hijacked
// connections (WebSockets) are not tracked by Shutdown; the session module closes them
// in its own OnStop, which therefore runs after the listener is closed.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"go.uber.org/fx"
)

// Route is an HTTP handler contributed to the server through the "routes" value group.
// Pattern is an http.ServeMux pattern (Go 1.22+ syntax, e.g. "GET /healthz" or
// "GET /fixtures/{name}").
type Route interface {
	http.Handler
	// Pattern returns the ServeMux pattern the route is registered under; "" registers
	// nothing (valid only for an UpgradeRoute reachable by upgrade alone).
	Pattern() string
}

// UpgradeRoute is a Route that also claims every request asking to upgrade to its
// protocol (the Upgrade header, compared case-insensitively as a token list), whatever
// the path. The session WebSocket handler is one: UpgradeProtocol returns "websocket".
// At most one route may claim a protocol.
type UpgradeRoute interface {
	Route
	// UpgradeProtocol returns the protocol token the route claims, e.g. "websocket".
	UpgradeProtocol() string
}

// AsRoute annotates a constructor so that its result joins the "routes" value group as a
// Route, e.g. fx.Provide(AsRoute(newFixturesRoute)). The constructor may return any type
// that implements Route (or UpgradeRoute).
func AsRoute(f any) any {
	return fx.Annotate(f, fx.As(new(Route)), fx.ResultTags(`group:"routes"`))
}

// RouteFunc adapts a pattern and a handler function to a Route.
func RouteFunc(pattern string, h http.HandlerFunc) Route { return routeFunc{pattern, h} }

type routeFunc struct {
	pattern string
	h       http.HandlerFunc
}

// Pattern implements Route.
func (r routeFunc) Pattern() string { return r.pattern }

// ServeHTTP implements http.Handler.
func (r routeFunc) ServeHTTP(w http.ResponseWriter, req *http.Request) { r.h(w, req) }

// Server is the public HTTP + WebSocket listener (--listen / DEMON_LISTEN).
type Server struct {
	l       *httpListener
	handler http.Handler
}

// ServerParams are NewServer's dependencies.
type ServerParams struct {
	fx.In
	Config Config
	Log    *slog.Logger
	LC     fx.Lifecycle
	Routes []Route `group:"routes"`
}

// NewServer builds the router from the contributed routes and registers the listener's
// lifecycle; nothing is bound here. Conflicting patterns, or two routes claiming the same
// upgrade protocol, are an error.
func NewServer(p ServerParams) (*Server, error) {
	h, err := newRouter(p.Log, p.Routes)
	if err != nil {
		return nil, err
	}
	s := &Server{handler: h}
	s.l = newHTTPListener(p.Log, "http", "the page (open it in a browser), session sockets and /metrics", p.Config.Listen, "--listen / DEMON_LISTEN", h)
	p.LC.Append(fx.StartStopHook(s.l.start, s.l.stop))
	return s, nil
}

// Handler returns the server's whole handler (routing, upgrade dispatch and the common
// headers), for tests that drive it without a socket.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr returns the bound address (nil before start and after stop).
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// URL returns the base URL the server is reachable at, e.g. "http://127.0.0.1:1318/"
// ("" when not started).
func (s *Server) URL() string { return s.l.URL() }

// ServerModule provides the Server and makes sure it is built (and so started).
var ServerModule = fx.Module("server",
	fx.Provide(NewServer),
	fx.Invoke(func(*Server) {}),
)

// router serves the common headers, upgrade dispatch, the refusal of non-canonical paths,
// then the ServeMux.
type router struct {
	log      *slog.Logger
	mux      *http.ServeMux
	upgrades map[string]http.Handler // lower-case protocol token → handler
}

func newRouter(log *slog.Logger, routes []Route) (http.Handler, error) {
	rt := &router{log: log, mux: http.NewServeMux(), upgrades: map[string]http.Handler{}}
	for _, r := range routes {
		if u, ok := r.(UpgradeRoute); ok {
			proto := strings.ToLower(strings.TrimSpace(u.UpgradeProtocol()))
			if proto == "" {
				return nil, fmt.Errorf("route %T: empty upgrade protocol", r)
			}
			if _, dup := rt.upgrades[proto]; dup {
				return nil, fmt.Errorf("route %T: upgrade protocol %q is already claimed by another route", r, proto)
			}
			rt.upgrades[proto] = r
		}
		if r.Pattern() == "" {
			if _, ok := r.(UpgradeRoute); !ok {
				return nil, fmt.Errorf("route %T: empty pattern", r)
			}
			continue
		}
		if err := handle(rt.mux, r.Pattern(), r); err != nil {
			return nil, err
		}
	}
	return rt, nil
}

// handle registers a pattern, turning ServeMux's panic on a conflict into an error.
func handle(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("route %q: %v", pattern, p)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// ServeHTTP sets the common headers, hands upgrade requests to the route that claims
// their protocol, and routes the rest by pattern.
func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setNoStore(w)
	if up := r.Header.Get("Upgrade"); up != "" && len(rt.upgrades) > 0 {
		for tok := range strings.SplitSeq(up, ",") {
			if uh, ok := rt.upgrades[strings.ToLower(strings.TrimSpace(tok))]; ok {
				uh.ServeHTTP(w, r)
				return
			}
		}
	}
	if r.Method != http.MethodConnect && cleanPath(r.URL.Path) != r.URL.Path {
		rt.log.Warn("refused non-canonical request path", "path", r.URL.EscapedPath(), "remote", r.RemoteAddr)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "404 not found\n")
		return
	}
	if _, pattern := rt.mux.Handler(r); pattern == "" {
		// No route: the mux answers 404, or 405 when the path exists for another method.
		// protocol.md §1.2 wants unknown paths to get a plain "404 not found".
		w = &notFoundWriter{ResponseWriter: w}
	}
	rt.mux.ServeHTTP(w, r)
}

// cleanPath is the path http.ServeMux would redirect p to (path.Clean, keeping a trailing
// slash); a request whose path differs from it is not canonical.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}

// notFoundWriter replaces the body of a 404 with protocol.md's "404 not found".
type notFoundWriter struct {
	http.ResponseWriter
	swallow bool
}

func (w *notFoundWriter) WriteHeader(code int) {
	if code != http.StatusNotFound {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.swallow = true
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.ResponseWriter.WriteHeader(code)
	_, _ = io.WriteString(w.ResponseWriter, "404 not found\n")
}

func (w *notFoundWriter) Write(b []byte) (int, error) {
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// httpListener binds in OnStart, serves in a goroutine and shuts down with the hook's
// context in OnStop. The public server and the control API share it.
type httpListener struct {
	log    *slog.Logger
	name   string // for logs: "http", "control"
	serves string // for the start-up line: what a user finds at the URL
	addr   string // configured address
	opt    string // the option that sets addr, for error messages
	srv    *http.Server

	mu   sync.Mutex
	ln   net.Listener
	done chan struct{}
}

func newHTTPListener(log *slog.Logger, name, serves, addr, opt string, h http.Handler) *httpListener {
	return &httpListener{
		log: log, name: name, serves: serves, addr: addr, opt: opt,
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}
}

func (l *httpListener) start(context.Context) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("%s listener: cannot listen on %s (%s): %w", l.name, l.addr, l.opt, err)
	}
	done := make(chan struct{})
	l.mu.Lock()
	l.ln, l.done = ln, done
	l.mu.Unlock()
	go func() {
		defer close(done)
		if err := l.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			l.log.Error("listener failed", "listener", l.name, "addr", ln.Addr().String(), "err", err)
		}
	}()
	l.log.Info("serving "+l.serves+" on "+urlFor(ln.Addr()), "listener", l.name)
	return nil
}

func (l *httpListener) stop(ctx context.Context) error {
	l.mu.Lock()
	ln, done := l.ln, l.done
	l.mu.Unlock()
	if ln == nil {
		return nil
	}
	err := l.srv.Shutdown(ctx)
	if err != nil {
		// The deadline passed with requests still running: cut them off.
		_ = l.srv.Close()
		err = fmt.Errorf("%s listener: graceful shutdown: %w", l.name, err)
	}
	<-done
	l.mu.Lock()
	l.ln, l.done = nil, nil
	l.mu.Unlock()
	return err
}

// Addr returns the bound address, nil when not listening.
func (l *httpListener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln == nil {
		return nil
	}
	return l.ln.Addr()
}

// URL returns "http://host:port/" for the bound address, "" when not listening.
func (l *httpListener) URL() string {
	a := l.Addr()
	if a == nil {
		return ""
	}
	return urlFor(a)
}

// setNoStore sets the headers protocol.md §1.2 puts on every response (a WebSocket
// upgrade writes its own response, so they only reach plain HTTP).
func setNoStore(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Cache-Control", "no-store, must-revalidate")
	h.Set("Pragma", "no-cache")
	h.Set("Expires", "0")
}

func urlFor(a net.Addr) string { return "http://" + a.String() + "/" }
