package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/fx"

	"github.com/demon-audio/demon/ws"
)

// WebService serves the browser protocol: session and upload sockets (claimed by the
// Upgrade header on any path) and the page's HTTP routes. The ws.Server is built in
// OnStart, once the session manager exists; routes answer 503 until then. OnStop drains:
// every live session gets an error frame and close 1001, and is closed, before the
// sessions module stops.
type WebService struct {
	cfg      Config
	log      *slog.Logger
	sessions *SessionsService
	metrics  *Metrics
	srv      atomic.Pointer[ws.Server]
}

// WebParams are NewWebService's dependencies.
type WebParams struct {
	fx.In
	Config   Config
	Log      *slog.Logger
	Sessions *SessionsService
	Metrics  *Metrics
	LC       fx.Lifecycle
}

// NewWebService registers the protocol server's lifecycle.
func NewWebService(p WebParams) *WebService {
	s := &WebService{cfg: p.Config, log: p.Log, sessions: p.Sessions, metrics: p.Metrics}
	p.LC.Append(fx.StartStopHook(s.start, s.stop))
	return s
}

// Server returns the protocol server (nil before start).
func (s *WebService) Server() *ws.Server { return s.srv.Load() }

func (s *WebService) start(context.Context) error {
	m := s.metrics
	srv, err := ws.NewServer(ws.Options{
		Manager:              s.sessions.Manager(),
		Log:                  s.log,
		UploadsDir:           filepath.Join(s.cfg.DataDir, "uploads"),
		AllowedOrigins:       s.cfg.AllowedOrigins,
		APIKey:               s.cfg.APIKey,
		MaxSessionsPerClient: s.cfg.MaxSessionsPerClient,
		MaxUploadBytes:       int64(s.cfg.MaxUploadBytes),
		MaxUploadSeconds:     s.cfg.MaxUploadSeconds.Seconds(),
		MaxConcurrentUploads: s.cfg.MaxConcurrentUploads,
		WriteTimeout:         s.cfg.WriteTimeout,
		MinWriteRate:         int64(s.cfg.MinWriteRate),
		Warmup: func() *ws.WarmupStatus {
			w := s.sessions.Warmup()
			if w == nil {
				return nil
			}
			sec := w.Seconds
			return &ws.WarmupStatus{Done: w.Done, Error: w.Error, Seconds: &sec}
		},
		Hooks: ws.Hooks{
			BytesSent:        func(n int) { m.WebSocketSentBytes.Add(float64(n)) },
			BytesReceived:    func(n int) { m.WebSocketReceivedBytes.Add(float64(n)) },
			TimeToFirstAudio: func(d time.Duration) { m.TimeToFirstAudio.Observe(d.Seconds()); m.SessionsStarted.Inc() },
			StartFailed:      m.FailedStart,
			SliceLateness:    func(d time.Duration) { m.SliceLateness.Observe(max(d.Seconds(), 0)) },
			StaleGap: func(d time.Duration) {
				m.Underruns.Inc()
				m.UnderrunStale.Add(d.Seconds())
			},
		},
	})
	if err != nil {
		return fmt.Errorf("protocol server: %w", err)
	}
	s.srv.Store(srv)
	return nil
}

func (s *WebService) stop(ctx context.Context) error {
	srv := s.srv.Load()
	if srv == nil {
		return nil
	}
	if err := srv.Shutdown(ctx, websocket.CloseGoingAway); err != nil {
		return fmt.Errorf("drain sessions: %w", err)
	}
	return nil
}

// webRoute forwards to the protocol server once it exists.
type webRoute struct {
	svc     *WebService
	pattern string
	upgrade bool
}

func (r webRoute) Pattern() string { return r.pattern }

func (r webRoute) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	srv := r.svc.srv.Load()
	if srv == nil {
		http.Error(w, "503 starting", http.StatusServiceUnavailable)
		return
	}
	if r.upgrade {
		srv.ServeWebSocket(w, req)
		return
	}
	srv.ServeRoutes(w, req)
}

// upgradeRoute claims WebSocket upgrades on any path.
type upgradeRoute struct{ webRoute }

func (upgradeRoute) UpgradeProtocol() string { return "websocket" }

// WebModule provides the protocol server, contributes its routes, and provides the
// control API's session directory (sessions live on the server's connections).
var WebModule = fx.Module("web",
	fx.Provide(NewWebService),
	fx.Provide(func(s *SessionsService, w *WebService) SessionDirectory { return directory{s, w} }),
	fx.Provide(AsRoute(func(s *WebService) Route { return upgradeRoute{webRoute{svc: s, upgrade: true}} })),
	fx.Provide(
		AsRoute(func(s *WebService) Route { return webRoute{svc: s, pattern: "/api/fixtures"} }),
		AsRoute(func(s *WebService) Route { return webRoute{svc: s, pattern: "/api/server-info"} }),
		AsRoute(func(s *WebService) Route { return webRoute{svc: s, pattern: "/api/loras"} }),
		AsRoute(func(s *WebService) Route { return webRoute{svc: s, pattern: "/api/user_uploads"} }),
		AsRoute(func(s *WebService) Route { return webRoute{svc: s, pattern: "/fixtures/"} }),
		AsRoute(func(s *WebService) Route { return webRoute{svc: s, pattern: "/user_uploads/"} }),
		AsRoute(func(s *WebService) Route { return webRoute{svc: s, pattern: "/"} }),
	),
)
