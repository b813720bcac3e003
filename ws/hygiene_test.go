package ws

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Connection hygiene: write deadlines for large messages and the upload cap.

// slowDial dials with a 16 KiB kernel receive buffer, so the client's
// reading pace is what the server's writes wait for.
func (e *env) slowDial(t *testing.T) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{ReadBufferSize: 16 << 10, NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(16 << 10)
		}
		return c, err
	}}
	c, _, err := d.Dial(e.wsURL(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// readPaced reads the next message at about rate bytes per second. It
// returns the bytes read and nil once the whole message is in, or the
// error that cut it short.
func readPaced(c *websocket.Conn, rate float64) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, r, err := c.NextReader()
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 16<<10)
	n, start := 0, time.Now()
	for {
		k, err := r.Read(buf)
		n += k
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		time.Sleep(time.Until(start.Add(time.Duration(float64(n) / rate * float64(time.Second)))))
	}
}

// TestLargeMessageWriteDeadlineScalesWithSize: the 10 s initial buffer
// (1.92 MB) reaches a client reading it at 1 MiB/s although that takes
// longer than WriteTimeout, while a client too slow for MinWriteRate is
// dropped and its session released.
func TestLargeMessageWriteDeadlineScalesWithSize(t *testing.T) {
	const total = 10 * 48000 * 2 * 2
	cfg := fixtureConfig(map[string]any{"fixture_name": "demo_groove_C_30s.wav", "crop": 0})
	start := func(t *testing.T, minRate int64) (*env, *websocket.Conn) {
		e := newEnv(t, envOptions{smallSendBuffers: true, opts: func(o *Options) {
			o.WriteTimeout = time.Second
			o.MinWriteRate = minRate
		}})
		c := e.slowDial(t)
		require.NoError(t, c.WriteJSON(cfg))
		var ready map[string]any
		require.NoError(t, c.ReadJSON(&ready))
		require.Equal(t, "ready", ready["type"])
		return e, c
	}

	t.Run("a slow link gets the time its size needs", func(t *testing.T) {
		e, c := start(t, 512<<10) // whole buffer within 1 s + 3.7 s
		t0 := time.Now()
		n, err := readPaced(c, 1<<20)
		require.NoError(t, err)
		assert.Equal(t, total, n)
		took := time.Since(t0)
		assert.Greater(t, took, 1500*time.Millisecond, "the read outlasted WriteTimeout, as a fixed deadline would not allow")
		typ, b, err := c.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, websocket.BinaryMessage, typ, "slices follow: %s", b)
		t.Logf("1.92 MB buffer read at 1 MiB/s in %v with WriteTimeout 1 s", took.Round(time.Millisecond))
		require.NoError(t, c.Close())
		e.waitReleased(t)
	})

	t.Run("a client too slow for MinWriteRate is dropped", func(t *testing.T) {
		e, c := start(t, 1<<20) // whole buffer within 1 s + 1.8 s; the client needs 7.5 s
		t0 := time.Now()
		n, err := readPaced(c, 256<<10)
		require.Error(t, err)
		assert.Less(t, n, total)
		took := time.Since(t0)
		assert.Greater(t, took, 2*time.Second, "no single chunk stalled for WriteTimeout")
		assert.Less(t, took, 7*time.Second)
		e.waitReleased(t)
		assert.Contains(t, e.logs.String(), "client gone")
		t.Logf("dropped after %v with %d of %d bytes read", took.Round(time.Millisecond), n, total)
	})
}

// TestUploadSocketsAreCapped: past MaxConcurrentUploads an upload socket is
// refused at once with upload_failed and close 1013; a slot frees when an
// upload ends.
func TestUploadSocketsAreCapped(t *testing.T) {
	e := newEnv(t, envOptions{opts: func(o *Options) { o.MaxConcurrentUploads = 1 }})
	a := e.dial(t)
	defer a.Close()
	require.NoError(t, a.WriteJSON(map[string]any{"type": "upload_track", "name": "first"}))
	eventually(t, "the first upload holds the slot", func() bool { return len(e.srv.uploadSlots) == 1 })

	b := e.dial(t)
	defer b.Close()
	require.NoError(t, b.WriteJSON(map[string]any{"type": "upload_track", "name": "second"}))
	evs, ce := readClose(t, b)
	assert.Equal(t, websocket.CloseTryAgainLater, ce.Code)
	require.Len(t, evs, 1)
	assert.Equal(t, "upload_failed", evs[0]["type"])
	assert.Contains(t, evs[0]["error"], "busy with 1 other uploads")

	require.NoError(t, a.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, testPCM(6))))
	var ok map[string]any
	require.NoError(t, a.ReadJSON(&ok))
	assert.Equal(t, "upload_ok", ok["type"])
	readClose(t, a)
	eventually(t, "slot released", func() bool { return len(e.srv.uploadSlots) == 0 })

	ok = e.upload(t, "third", 2, testPCM(6))
	assert.Equal(t, "upload_ok", ok["type"], "%v", ok)
}
