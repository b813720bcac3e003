package bench

import (
	"context"
	"net/http/httptest"
	"time"

	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/ws"
)

// wsStack is a ws.Server on a loopback httptest listener in front of a manager: the
// in-process WebSocket path (the same handler demond mounts).
type wsStack struct {
	mgr    *session.Manager
	srv    *ws.Server
	ts     *httptest.Server
	client *WSClient
}

func newWSStack(env *Env, mgr *session.Manager, cfg Config) (*wsStack, error) {
	srv, err := ws.NewServer(ws.Options{Manager: mgr, MaxSessionsPerClient: -1, HandshakeTimeout: 5 * time.Minute})
	if err != nil {
		return nil, err
	}
	ts := httptest.NewServer(srv.Handler())
	st := &wsStack{mgr: mgr, srv: srv, ts: ts}
	st.client = &WSClient{URL: "ws://" + ts.Listener.Addr().String() + "/", Fixture: env.Fixture, Depth: cfg.Depth, Steps: cfg.Steps}
	// The server synthesises the same demo tracks; send PCM only when asked or when the
	// fixture is not one of them.
	st.client.UseServerFixture = !cfg.Upload && contains(ws.DemoFixtures().Names(), env.Fixture)
	if !st.client.UseServerFixture {
		st.client.PCM = env.PCM
	}
	return st, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Close drains the server and stops the listener.
func (st *wsStack) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = st.srv.Shutdown(ctx, 1001)
	st.ts.Close()
	_ = st.mgr.WaitIdle(ctx)
}

// Kind implements Client.
func (st *wsStack) Kind() string { return "websocket (in-process ws.Server on loopback)" }

// Start implements Client.
func (st *wsStack) Start(ctx context.Context) (Live, error) {
	l, err := st.client.Start(ctx)
	if err != nil {
		st.waitIdle()
		return nil, err
	}
	return &idleLive{Live: l, st: st}, nil
}

// waitIdle waits until the server has closed every session (the client's close is
// answered by the WebSocket layer before the session is torn down).
func (st *wsStack) waitIdle() {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = st.mgr.WaitIdle(ctx)
}

type idleLive struct {
	Live
	st *wsStack
}

func (l *idleLive) Close() error {
	err := l.Live.Close()
	l.st.waitIdle()
	return err
}
