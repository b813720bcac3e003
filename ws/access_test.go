package ws

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAPIKeyAndOrigin(t *testing.T) {
	e := newEnv(t, envOptions{opts: func(o *Options) {
		o.APIKey = "s3cret"
		o.AllowedOrigins = []string{"https://studio.example"}
	}})
	dial := func(query string, h http.Header) (*websocket.Conn, int) {
		c, resp, err := websocket.DefaultDialer.Dial(e.wsURL()+query, h)
		if err != nil {
			require.NotNil(t, resp, "%v", err)
			return nil, resp.StatusCode
		}
		return c, 101
	}
	_, code := dial("", nil)
	assert.Equal(t, 401, code)
	_, code = dial("?apiKey=wrong", nil)
	assert.Equal(t, 401, code)
	_, code = dial("?apiKey=s3cret", http.Header{"Origin": {"https://evil.example"}})
	assert.Equal(t, 403, code)
	c, code := dial("?apiKey=s3cret&other=1", http.Header{"Origin": {"https://studio.example"}})
	require.Equal(t, 101, code)
	c.Close()
	c, code = dial("", http.Header{"Authorization": {"Bearer s3cret"}})
	require.Equal(t, 101, code)
	c.Close()
	// Upload routes need the key; the rest of the API does not.
	st, _, _ := e.get(t, "/api/user_uploads")
	assert.Equal(t, 401, st)
	st, _, _ = e.get(t, "/api/user_uploads?apiKey=s3cret")
	assert.Equal(t, 200, st)
	st, _, _ = e.get(t, "/api/fixtures")
	assert.Equal(t, 200, st)
}

// TestDefaultOriginPolicy: with no allow-list, same-host origins pass, and
// so do loopback origins on any port when the server is reached on
// loopback (DEMON's Next.js client on :6660); other sites get 403.
func TestDefaultOriginPolicy(t *testing.T) {
	e := newEnv(t, envOptions{})
	host := e.hs.Listener.Addr().String()
	for origin, want := range map[string]int{
		"": 101, "http://" + host: 101,
		"http://localhost:6660": 101, "http://127.0.0.1:3000": 101, "http://[::1]:6660": 101, "http://LOCALHOST": 101,
		"http://evil.example": 403, "http://localhost.evil.example:6660": 403, "http://127.0.0.1.evil.example": 403,
		"null": 403,
	} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		c, resp, err := websocket.DefaultDialer.Dial(e.wsURL(), h)
		if want == 101 {
			require.NoError(t, err, origin)
			c.Close()
			continue
		}
		require.Error(t, err, origin)
		assert.Equal(t, want, resp.StatusCode, origin)
	}
}

// TestLoopbackOriginsOnlyOnLoopback: a connection that arrived on a public
// address does not accept loopback origins (only same-host ones).
func TestLoopbackOriginsOnlyOnLoopback(t *testing.T) {
	s, err := NewServer(Options{})
	require.NoError(t, err)
	req := func(local net.Addr, host, origin string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "http://"+host+"/", nil)
		r.Header.Set("Origin", origin)
		return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
	}
	public := &net.TCPAddr{IP: net.ParseIP("192.0.2.10"), Port: 1318}
	loop := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1318}
	assert.False(t, s.originAllowed(req(public, "192.0.2.10:1318", "http://localhost:6660")))
	assert.True(t, s.originAllowed(req(public, "192.0.2.10:1318", "http://192.0.2.10:1318")))
	assert.True(t, s.originAllowed(req(loop, "127.0.0.1:1318", "http://localhost:6660")))
	// An explicit allow-list replaces the default policy entirely.
	s, err = NewServer(Options{AllowedOrigins: []string{"https://studio.example"}})
	require.NoError(t, err)
	assert.False(t, s.originAllowed(req(loop, "127.0.0.1:1318", "http://localhost:6660")))
}

func TestPerClientSessionCap(t *testing.T) {
	e := newEnv(t, envOptions{opts: func(o *Options) { o.MaxSessionsPerClient = 1 }})
	first := e.startClient(t, fixtureConfig(nil), nil)
	c := e.dial(t)
	defer c.Close()
	require.NoError(t, c.WriteJSON(fixtureConfig(nil)))
	evs, ce := readClose(t, c)
	assert.Equal(t, websocket.CloseTryAgainLater, ce.Code)
	require.Len(t, evs, 1)
	assert.Equal(t, CodeServerBusy, evs[0]["code"])
	assert.Contains(t, evs[0]["message"], "too many sessions from your address")
	// Upload sockets are not counted.
	up := e.dial(t)
	defer up.Close()
	require.NoError(t, up.WriteJSON(map[string]any{"type": "upload_track", "name": "cap"}))
	require.NoError(t, up.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, testPCM(6))))
	var ok map[string]any
	require.NoError(t, up.ReadJSON(&ok))
	assert.Equal(t, "upload_ok", ok["type"])
	readClose(t, up)
	first.readSlices(1)
	first.close()
	e.waitReleased(t)
	eventually(t, "slot release", func() bool { return e.srv.Connections() == 0 })
	e.requireHealthy(t)
}

func TestShutdownSendsErrorAndCode(t *testing.T) {
	e := newEnv(t, envOptions{})
	cl := e.startClient(t, fixtureConfig(nil), nil)
	cl.readSlices(1)
	idle := e.dial(t) // connected, config not sent yet
	defer idle.Close()
	eventually(t, "two connections", func() bool { return e.srv.Connections() == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- e.srv.Shutdown(ctx, websocket.CloseServiceRestart) }()
	for _, c := range []*websocket.Conn{cl.c, idle} {
		evs, ce := readClose(t, c)
		assert.Equal(t, websocket.CloseServiceRestart, ce.Code)
		require.NotEmpty(t, evs)
		last := evs[len(evs)-1]
		assert.Equal(t, "error", last["type"])
		assert.Equal(t, CodeServerShutdown, last["code"])
	}
	require.NoError(t, <-done)
	e.requireReleased(t)
	// New sockets are refused the same way while draining.
	c := e.dial(t)
	defer c.Close()
	evs, ce := readClose(t, c)
	assert.Equal(t, websocket.CloseServiceRestart, ce.Code)
	assert.Equal(t, CodeServerShutdown, evs[0]["code"])
}

// TestSlowClientIsDropped: a client that stops reading while never-drop
// events pile up loses its session (queue rule 4), and everything is
// released.
func TestSlowClientIsDropped(t *testing.T) {
	e := newEnv(t, envOptions{opts: func(o *Options) { o.OutgoingQueue = 4; o.WriteTimeout = 300 * time.Millisecond }})
	cl := e.startClient(t, fixtureConfig(nil), nil)
	cl.readSlices(1)
	// Stop reading; flood acks (never-drop) until the server gives up.
	for i := 0; i < 5000 && e.mgr.Open() > 0; i++ {
		if cl.c.WriteMessage(websocket.TextMessage, []byte(`{"type":"enable_lora","id":"x"}`)) != nil {
			break
		}
	}
	e.waitReleased(t)
}
