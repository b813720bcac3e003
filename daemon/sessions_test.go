package daemon

import (
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/demon-audio/demon/trt/trttest"
)

// metric returns the value of one sample of /metrics (0 when absent).
func metric(t *testing.T, base, sample string) float64 {
	t.Helper()
	resp, err := http.Get(base + "metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`)
	m := re.FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(t, err)
	return v
}

func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// /metrics follows sessions as they start, fail and end, and the device gauges return to
// the model's baseline afterwards.
func TestMetricsFollowSessions(t *testing.T) {
	trttest.NoLeaks(t)
	var srv *Server
	var faults *FaultsService
	var dev *DeviceService
	app := fxtest.New(t, Modules(serviceConfig(t, "--device-capacity", "2GiB"), slog.New(slog.DiscardHandler)), fx.Populate(&srv, &faults, &dev))
	app.RequireStart()
	defer app.RequireStop()
	base := srv.URL()
	addr := base[len("http://") : len(base)-1]
	modelBytes := metric(t, base, "demon_device_memory_used_bytes")
	require.Positive(t, modelBytes)

	c, _ := wsSession(t, addr)
	readSlices(t, c, 2)
	assert.Equal(t, 1.0, metric(t, base, "demon_sessions_active"))
	assert.Equal(t, 1.0, metric(t, base, "demon_sessions_started_total"))
	assert.Greater(t, metric(t, base, "demon_device_memory_used_bytes"), modelBytes)
	assert.Positive(t, metric(t, base, "demon_tick_duration_seconds_count"))
	assert.Positive(t, metric(t, base, "demon_websocket_sent_bytes_total"))
	assert.Equal(t, 1.0, metric(t, base, "demon_session_start_seconds_count"))
	assert.Positive(t, metric(t, base, "demon_session_start_seconds_sum"))
	assert.Equal(t, 1.0, metric(t, base, "demon_session_time_to_first_audio_seconds_count"))
	assert.GreaterOrEqual(t, metric(t, base, "demon_session_time_to_first_audio_seconds_sum"),
		metric(t, base, "demon_session_start_seconds_sum"), "the first audio follows the create")

	require.NoError(t, c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")))
	eventually(t, func() bool { return metric(t, base, "demon_sessions_active") == 0 }, "the session to end")
	assert.Equal(t, modelBytes, metric(t, base, "demon_device_memory_used_bytes"), "ledger back to the model alone")

	// A start refused by admission (the device is nearly full) counts as refused, neither
	// started nor failed.
	tot, err := dev.Device().Totals()
	require.NoError(t, err)
	filler, err := dev.Device().Alloc(tot.FreeBytes()-(16<<20), "test:filler")
	require.NoError(t, err)
	rc, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
	require.NoError(t, err)
	require.NoError(t, rc.WriteMessage(websocket.TextMessage, []byte(`{"fixture_name":"demo_ambient_Am_20s.wav","use_server_fixture":true}`)))
	require.NoError(t, rc.SetReadDeadline(time.Now().Add(20*time.Second)))
	var refusal *websocket.CloseError
	for refusal == nil {
		if _, _, err := rc.ReadMessage(); err != nil {
			require.ErrorAs(t, err, &refusal)
		}
	}
	_ = rc.Close()
	require.NoError(t, filler.Close())
	assert.Equal(t, websocket.CloseTryAgainLater, refusal.Code)
	assert.Equal(t, 1.0, metric(t, base, "demon_sessions_refused_total"))
	assert.Equal(t, 1.0, metric(t, base, "demon_session_start_seconds_count"), "a refusal is not a start")

	// A failed start counts by window and point, and hits its fault point: in create (W3),
	// in the handshake (W4), constructing the runner (W5).
	for _, tc := range []struct{ point, window string }{
		{"create.conditioning", "W3"}, {"handshake.initial_buffer", "W4"}, {"run.runner_init", "W5"},
	} {
		series := `demon_sessions_failed_total{point="` + tc.point + `",window="` + tc.window + `"}`
		require.Equal(t, 0.0, metric(t, base, series), "the series exists from boot at 0")
		require.NoError(t, faults.Faults().Arm(tc.point+"=error"))
		failStart(t, addr, `{"fixture_name":"demo_ambient_Am_20s.wav","use_server_fixture":true}`)
		require.NoError(t, faults.Faults().Arm(tc.point+"=off"))
		eventually(t, func() bool { return metric(t, base, series) == 1 }, "the failure metric "+series)
		assert.Equal(t, 2.0, metric(t, base, `demon_fault_point_hits_total{point="`+tc.point+`"}`), "the good start and the failed one")
		eventually(t, func() bool { return metric(t, base, "demon_device_memory_used_bytes") == modelBytes }, "the failed start to be unwound")
	}
	assert.Equal(t, 3.0, metric(t, base, "demon_session_start_seconds_count"),
		"every create that finished is timed (the W4 and W5 failures came after it), the failed create is not")
	assert.Equal(t, 1.0, metric(t, base, "demon_sessions_refused_total"))
	assert.Equal(t, modelBytes, metric(t, base, "demon_device_memory_used_bytes"))
}

// failStart sends a session config and reads until the server closes the socket.
func failStart(t *testing.T, addr, config string) {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(config)))
	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			require.ErrorAs(t, err, &ce, "the server closed the session")
			require.Equal(t, websocket.CloseInternalServerErr, ce.Code)
			return
		}
	}
}

// A session paced slower than its slices cover (a slice of 0.36 s per tick of 0.5 s, so the
// playhead moves 0.5 s between slices) leaves stretches of the track unpatched between
// slices: those are underruns, although the slices arrive ahead of the playhead.
func TestUnderrunsCountStaleGaps(t *testing.T) {
	trttest.NoLeaks(t)
	var srv *Server
	app := fxtest.New(t, Modules(serviceConfig(t, "--device-capacity", "2GiB", "--tick-interval", "500ms"), slog.New(slog.DiscardHandler)), fx.Populate(&srv))
	app.RequireStart()
	defer app.RequireStop()
	base := srv.URL()
	assert.Zero(t, metric(t, base, "demon_underruns_total"))

	c, _ := wsSession(t, base[len("http://"):len(base)-1])
	readSlices(t, c, 3)
	// The writer renders a slice (and counts its gap) before the client reads it.
	underruns := metric(t, base, "demon_underruns_total")
	assert.GreaterOrEqual(t, underruns, 2.0, "every slice after the first leaves a gap")
	stale := metric(t, base, "demon_underrun_stale_seconds_total")
	assert.Greater(t, stale, underruns*0.04, "each gap is longer than one latent frame")
	assert.Less(t, stale, underruns*5, "and shorter than half the track")
	require.NoError(t, c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")))
	eventually(t, func() bool { return metric(t, base, "demon_sessions_active") == 0 }, "the session to end")
}
