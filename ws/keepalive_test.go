package ws

import (
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/demon-audio/demon/session"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Keepalive and the idle pause.

// TestKeepalive: a client that reads but never sends stays alive on its
// pong replies; one that stops reading (so answers no ping) is released
// within two ping intervals.
func TestKeepalive(t *testing.T) {
	const ping = 500 * time.Millisecond
	e := newEnv(t, envOptions{opts: func(o *Options) { o.PingInterval = ping }})

	quiet := e.startClient(t, fixtureConfig(nil), nil)
	var pings atomic.Int32
	quiet.c.SetPingHandler(func(data string) error {
		pings.Add(1)
		return quiet.c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	got := quiet.slicesFor(5 * ping)
	assert.GreaterOrEqual(t, pings.Load(), int32(3), "pings every interval")
	assert.NotEmpty(t, got)
	assert.Equal(t, 1, e.mgr.Open(), "a client that only reads is alive after %v", 5*ping)
	quiet.slicesFor(ping) // still streaming
	quiet.close()
	e.waitReleased(t)

	dead := e.startClient(t, fixtureConfig(nil), nil)
	dead.readSlices(1)
	t0 := time.Now() // from here on it reads nothing, so it answers no ping
	eventually(t, "dead client released", func() bool { return e.mgr.Open() == 0 })
	took := time.Since(t0)
	assert.Less(t, took, 2*ping+time.Second, "released within two ping intervals (plus teardown)")
	e.waitReleased(t)
	t.Logf("dead client released %v after its last read (ping interval %v)", took.Round(time.Millisecond), ping)
}

// received is one message from pump.
type received struct {
	typ  int
	data []byte
	at   time.Time
}

// pump reads the client's socket on a goroutine (a gorilla read that times
// out poisons the connection, so gaps are timed here instead). stop closes
// the socket and waits for the goroutine.
func (cl *client) pump() (msgs <-chan received, stop func()) {
	ch := make(chan received, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		for {
			_ = cl.c.SetReadDeadline(time.Now().Add(30 * time.Second))
			typ, b, err := cl.c.ReadMessage()
			if err != nil {
				return
			}
			ch <- received{typ, b, time.Now()}
		}
	}()
	return ch, func() {
		_ = cl.c.Close()
		for range ch {
		}
		<-done
	}
}

// nextSlice waits up to d for the next slice (JSON events are skipped).
func nextSlice(msgs <-chan received, d time.Duration) (received, bool) {
	timeout := time.After(d)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return received{}, false
			}
			if m.typ == websocket.BinaryMessage {
				return m, true
			}
		case <-timeout:
			return received{}, false
		}
	}
}

// TestIdlePauseStopsAndResumes: without input changes the DiT stops after
// IdlePause, and for IdleDecodeFor the slices that keep coming are re-decodes
// of the last latent (tick_ms 0, the same generation count); then slices stop.
// An unchanged params heartbeat does not wake the session, a changed knob
// resumes DiT ticks.
func TestIdlePauseStopsAndResumes(t *testing.T) {
	const idle, redecodeFor = 400 * time.Millisecond, 600 * time.Millisecond
	e := newEnv(t, envOptions{cfg: func(c *session.Config) { c.IdlePause, c.IdleDecodeFor = idle, redecodeFor }})
	t0 := time.Now() // the session's last activity (its creation) comes after this
	cl := e.startClient(t, fixtureConfig(nil), nil)
	msgs, stop := cl.pump()
	defer stop()
	params := func(raw map[string]any) {
		b, err := json.Marshal(map[string]any{"type": "params", "raw": raw, "playback_pos": 0.5})
		require.NoError(t, err)
		require.NoError(t, cl.c.WriteMessage(websocket.TextMessage, b))
	}
	header := func(m received) SliceHeader {
		h, _, err := DecodeSliceHeader(m.data)
		require.NoError(t, err)
		return h
	}

	first, ok := nextSlice(msgs, 5*time.Second)
	require.True(t, ok, "slices before the pause")
	require.NotZero(t, header(first).TickMs, "a DiT tick's slice")
	lastDiT, gens := first, header(first).NumGens
	var redecodes []received
	for {
		m, ok := nextSlice(msgs, 3*idle/2)
		if !ok {
			break
		}
		require.Less(t, time.Since(first.at), 5*time.Second, "slices never stopped")
		if h := header(m); h.TickMs != 0 {
			require.Empty(t, redecodes, "a DiT tick during the idle pause")
			lastDiT, gens = m, h.NumGens
		} else {
			assert.Equal(t, gens, h.NumGens, "a re-decode of the last latent")
			redecodes = append(redecodes, m)
		}
	}
	assert.Greater(t, lastDiT.at.Sub(t0), idle-100*time.Millisecond, "DiT slices flowed until the pause")
	require.GreaterOrEqual(t, len(redecodes), 5, "re-decodes keep slices coming after the DiT stops")
	assert.Greater(t, redecodes[0].at.Sub(t0), idle, "re-decodes only after the pause")
	span := redecodes[len(redecodes)-1].at.Sub(redecodes[0].at)
	assert.GreaterOrEqual(t, span, redecodeFor/2, "re-decodes for IdleDecodeFor")
	assert.Less(t, span, redecodeFor+500*time.Millisecond, "re-decodes stop after IdleDecodeFor")

	// The 8 ms heartbeat with unchanged knobs is not activity.
	for range 5 {
		params(map[string]any{})
		time.Sleep(50 * time.Millisecond)
	}
	_, ok = nextSlice(msgs, idle)
	assert.False(t, ok, "an unchanged heartbeat resumed the session")

	t1 := time.Now()
	params(map[string]any{"denoise": 0.7})
	m, ok := nextSlice(msgs, 2*time.Second)
	require.True(t, ok, "a changed knob resumes the session")
	assert.NotZero(t, header(m).TickMs, "with DiT ticks")
	t.Logf("DiT paused %v after the start; %d re-decodes over %v; resumed %v after the change",
		lastDiT.at.Sub(t0).Round(time.Millisecond), len(redecodes), span.Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
	stop()
	e.waitReleased(t)
}
