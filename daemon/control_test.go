package daemon

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/demon-audio/demon/trt/trttest"
)

type sentCmd struct {
	id       string
	cmd, pcm []byte
}

// fakeDirectory is a SessionDirectory over a fixed list.
type fakeDirectory struct {
	sessions []SessionInfo
	sent     []sentCmd
	sendErr  error
}

func (d *fakeDirectory) List() []SessionInfo { return d.sessions }

func (d *fakeDirectory) Get(id string) (SessionInfo, bool) {
	for _, s := range d.sessions {
		if s.ID == id {
			return s, true
		}
	}
	return SessionInfo{}, false
}

func (d *fakeDirectory) Send(id string, cmd, pcm []byte) error {
	if _, ok := d.Get(id); !ok {
		return ErrSessionNotFound
	}
	if d.sendErr != nil {
		return d.sendErr
	}
	d.sent = append(d.sent, sentCmd{id, cmd, pcm})
	return nil
}

func commandBody(jsonText string, pcm []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(jsonText)))
	return append(append(b, jsonText...), pcm...)
}

func pcmFrame(channels, samples uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, channels)
	b = binary.LittleEndian.AppendUint32(b, samples)
	for i := range channels * samples {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(i)))
	}
	return b
}

func newTestControl(t *testing.T, dir SessionDirectory, args ...string) *Control {
	t.Helper()
	return NewControl(ControlParams{
		Config: serviceConfig(t, args...), Log: slog.New(slog.DiscardHandler),
		LC: fxtest.NewLifecycle(t), Directory: dir,
	})
}

func TestControlAPI(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	dir := &fakeDirectory{sessions: []SessionInfo{
		{ID: "old", StartedAt: t0, Snapshot: map[string]any{"prompt": "warm pads", "bpm": 120}},
		{ID: "new_1-x", StartedAt: t0.Add(time.Minute), Snapshot: map[string]any{"prompt": "thrash", "id": "spoof"}},
	}}
	h := newTestControl(t, dir).Handler()

	cases := []struct {
		name     string
		method   string
		path     string
		body     []byte
		sendErr  error
		wantCode int
		wantBody string // substring
	}{
		{"list newest first", "GET", "/sessions", nil, nil, 200, `[{"id":"new_1-x","prompt":"thrash","started_at":1767323105},{"bpm":120,"id":"old","prompt":"warm pads","started_at":1767323045}]`},
		{"get", "GET", "/sessions/old", nil, nil, 200, `{"bpm":120,"id":"old","prompt":"warm pads","started_at":1767323045}`},
		{"get unknown", "GET", "/sessions/nope", nil, nil, 404, `{"error":"session not found: nope"}`},
		{"get bad id", "GET", "/sessions/a.b", nil, nil, 400, "invalid session id"},
		{"get id too long", "GET", "/sessions/" + strings.Repeat("a", 65), nil, nil, 400, "invalid session id"},
		{"cmd", "POST", "/sessions/old/cmd", commandBody(`{"type":"params","denoise":0.5}`, nil), nil, 200, `{"audio_bytes":0,"sent":true,"session_id":"old"}`},
		{"cmd with pcm", "POST", "/sessions/old/cmd", commandBody(`{"type":"swap_source"}`, pcmFrame(2, 3)), nil, 200, `"audio_bytes":32`},
		{"cmd unknown session", "POST", "/sessions/nope/cmd", commandBody(`{}`, nil), nil, 404, "session not found"},
		{"cmd bad id", "POST", "/sessions/%20/cmd", commandBody(`{}`, nil), nil, 400, "invalid session id"},
		{"cmd short body", "POST", "/sessions/old/cmd", []byte{1, 0}, nil, 400, "u32 LE JSON length"},
		{"cmd length past end", "POST", "/sessions/old/cmd", append(binary.LittleEndian.AppendUint32(nil, 99), "{}"...), nil, 400, "exceeds"},
		{"cmd not json", "POST", "/sessions/old/cmd", commandBody(`{"type":`, nil), nil, 400, "not a JSON object"},
		{"cmd json array", "POST", "/sessions/old/cmd", commandBody(`[1]`, nil), nil, 400, "not a JSON object"},
		{"cmd pcm truncated", "POST", "/sessions/old/cmd", commandBody(`{}`, pcmFrame(2, 3)[:20]), nil, 400, "carries 12 bytes"},
		{"cmd pcm header short", "POST", "/sessions/old/cmd", commandBody(`{}`, []byte{2, 0, 0}), nil, 400, "8-byte header"},
		{"cmd rejected", "POST", "/sessions/old/cmd", commandBody(`{}`, nil), ErrBadCommand, 400, "bad command"},
		{"cmd internal failure", "POST", "/sessions/old/cmd", commandBody(`{}`, nil), errors.New("queue closed"), 500, `{"error":"queue closed"}`},
		{"wrong method", "DELETE", "/sessions/old", nil, nil, 405, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir.sendErr = tc.sendErr
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, bytes.NewReader(tc.body)))
			assert.Equal(t, tc.wantCode, rec.Code, rec.Body.String())
			assert.Contains(t, rec.Body.String(), tc.wantBody)
			assert.Equal(t, "no-store, must-revalidate", rec.Header().Get("Cache-Control"))
			if tc.wantCode != 405 {
				assert.Equal(t, "application/json; charset=utf-8", rec.Header().Get("Content-Type"))
			}
		})
	}
	require.Len(t, dir.sent, 2)
	assert.Equal(t, sentCmd{"old", []byte(`{"type":"params","denoise":0.5}`), nil}, dir.sent[0])
	assert.Equal(t, []byte(`{"type":"swap_source"}`), dir.sent[1].cmd)
	assert.Equal(t, pcmFrame(2, 3), dir.sent[1].pcm)
}

func TestControlAPIKey(t *testing.T) {
	h := newTestControl(t, &fakeDirectory{}, "--api-key", "s3cret").Handler()
	cases := []struct {
		name     string
		target   string
		auth     string
		wantCode int
	}{
		{"no key", "/sessions", "", 401},
		{"wrong bearer", "/sessions", "Bearer nope", 401},
		{"bearer", "/sessions", "Bearer s3cret", 200},
		{"bearer lower-case scheme", "/sessions", "bearer s3cret", 200},
		{"query", "/sessions?apiKey=s3cret", "", 200},
		{"wrong query", "/sessions?apiKey=s3cre", "", 401},
		{"prefix of the key", "/sessions", "Bearer s3c", 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", tc.target, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			assert.Equal(t, tc.wantCode, rec.Code)
			if tc.wantCode == 401 {
				assert.JSONEq(t, `{"error":"missing or wrong API key"}`, rec.Body.String())
				assert.NotEmpty(t, rec.Header().Get("WWW-Authenticate"))
			}
		})
	}
}

func TestControlListener(t *testing.T) {
	trttest.NoLeaks(t)
	var c *Control
	app := fxtest.New(t, Modules(serviceConfig(t), slog.New(slog.DiscardHandler)), fx.Populate(&c))
	app.RequireStart()
	resp, err := http.Get(c.URL() + "sessions")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "[]\n", string(body), "the empty directory lists nothing")
	var got map[string]any
	resp, err = http.Post(c.URL()+"sessions/abc/cmd", "application/octet-stream", bytes.NewReader(commandBody(`{}`, nil)))
	require.NoError(t, err)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	resp.Body.Close()
	assert.Equal(t, 404, resp.StatusCode)
	app.RequireStop()
	assert.Empty(t, c.URL())
}

func TestControlDisabled(t *testing.T) {
	trttest.NoLeaks(t)
	var c *Control
	app := fxtest.New(t, Modules(serviceConfig(t, "--control-listen", ""), slog.New(slog.DiscardHandler)), fx.Populate(&c))
	app.RequireStart()
	assert.Empty(t, c.URL())
	app.RequireStop()
}

func TestValidSessionID(t *testing.T) {
	for _, id := range []string{"a", "warmup-1f3a", "A_b-9", strings.Repeat("z", 64)} {
		assert.True(t, ValidSessionID(id), id)
	}
	for _, id := range []string{"", "a b", "a/b", "é", "a.b", strings.Repeat("z", 65)} {
		assert.False(t, ValidSessionID(id), id)
	}
}

// The production graph: a command posted to the control API reaches the live session's
// WebSocket; knob and blend changes come back as echoes, anything else is applied and
// acked on the browser's socket.
func TestControlAPIDrivesALiveSession(t *testing.T) {
	trttest.NoLeaks(t)
	var srv *Server
	var ctl *Control
	app := fxtest.New(t, Modules(serviceConfig(t, "--device-capacity", "2GiB"), slog.New(slog.DiscardHandler)), fx.Populate(&srv, &ctl))
	app.RequireStart()
	defer app.RequireStop()
	addr := strings.TrimSuffix(strings.TrimPrefix(srv.URL(), "http://"), "/")
	c, _ := wsSession(t, addr)
	readSlices(t, c, 1)

	resp, body := get(t, ctl.URL()+"sessions")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	var list []map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &list))
	require.Len(t, list, 1)
	id := list[0]["id"].(string)

	post := func(id, cmd string) (int, string) {
		resp, err := http.Post(ctl.URL()+"sessions/"+id+"/cmd", "application/octet-stream", bytes.NewReader(commandBody(cmd, nil)))
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	// awaitEvent reads the browser's socket until an event of type typ.
	awaitEvent := func(typ string) map[string]any {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
		for {
			kind, msg, err := c.ReadMessage()
			require.NoError(t, err, "waiting for %s", typ)
			var ev map[string]any
			if kind == websocket.TextMessage && json.Unmarshal(msg, &ev) == nil && ev["type"] == typ {
				return ev
			}
		}
	}

	code, body := post(id, `{"type":"set_depth","value":2}`)
	require.Equal(t, http.StatusOK, code, body)
	assert.EqualValues(t, 2, awaitEvent("depth_applied")["value"])
	code, body = post(id, `{"type":"set_prompt_blend","value":0.25}`)
	require.Equal(t, http.StatusOK, code, body)
	assert.InDelta(t, 0.25, awaitEvent("prompt_blend_echo")["value"], 1e-9)

	code, body = post(id, `{"type":"teleport"}`)
	assert.Equal(t, http.StatusBadRequest, code, body)
	assert.Contains(t, body, "teleport")
	code, body = post("ghost", `{"type":"set_depth","value":2}`)
	assert.Equal(t, http.StatusNotFound, code, body)
}
