package ws

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Steady-state robustness: binary follow-ups, oversized frames, loop band,
// not-supported answers, messages before ready.

// TestBinaryFollowUpsNeverKillTheSession: an oversized swap PCM, a
// PCM-taking message that fails to decode followed by its PCM, a stray
// binary frame and an oversized text message are each answered or ignored,
// and the session keeps streaming with the client's mirror in step.
func TestBinaryFollowUpsNeverKillTheSession(t *testing.T) {
	const limit = 1 << 20
	e := newEnv(t, envOptions{opts: func(o *Options) { o.MaxUploadBytes = limit }})
	cl := e.startClient(t, fixtureConfig(nil), nil)
	cl.readSlices(1)

	// (a) A swap PCM over MaxUploadBytes (6 s stereo float32 ≈ 2.3 MB):
	// swap_failed, not a bare 1009.
	cl.sendJSON(map[string]any{"type": "swap_source", "fixture_name": "big.wav"})
	require.NoError(t, cl.c.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, testPCM(6))))
	assert.Contains(t, cl.applyUntil("swap_failed")["error"], "exceeds this server's limit of 1048576 bytes")
	cl.readSlices(2)

	// (b) A swap_source that fails to decode, followed by its PCM: the
	// bad_message error and the swap_failed the client waits for; the PCM
	// is consumed as the message's follow-up.
	cl.sendJSON(map[string]any{"type": "swap_source", "fixture_name": "x.wav", "stem_source_mode": "bogus"})
	require.NoError(t, cl.c.WriteMessage(websocket.BinaryMessage, AppendPCMFrame(nil, 2, testPCM(0.5))))
	ev := cl.applyUntil("error")
	assert.Equal(t, CodeBadMessage, ev["code"])
	assert.Contains(t, ev["message"], "stem_source_mode")
	assert.Contains(t, cl.applyUntil("swap_failed")["error"], "stem_source_mode")
	// The same for a timbre source without a name; its follow-up here is
	// text (the rule takes the next message whatever its type) and is not
	// dispatched.
	cl.sendJSON(map[string]any{"type": "set_timbre_source"})
	cl.sendJSON(map[string]any{"type": "teleport"})
	evs := cl.eventsUntil("timbre_failed")
	assert.Contains(t, evs[len(evs)-1]["error"], "name")
	cl.sendJSON(map[string]any{"type": "prompt", "tags": "after the follow-up"})
	for _, ev := range cl.eventsUntil("prompt_applied") {
		assert.NotEqual(t, "not_supported", ev["type"], "the text follow-up was dispatched: %v", ev)
	}
	// An oversized follow-up of a message that failed to decode is consumed
	// too.
	cl.sendJSON(map[string]any{"type": "set_structure_source", "name": 5})
	require.NoError(t, cl.c.WriteMessage(websocket.BinaryMessage, bytes.Repeat([]byte{7}, 2*limit)))
	assert.Contains(t, cl.applyUntil("structure_failed")["error"], "wrong field type")

	// (c) A stray binary frame well over the text limit is ignored.
	require.NoError(t, cl.c.WriteMessage(websocket.BinaryMessage, bytes.Repeat([]byte{1}, 200<<10)))
	// An oversized text message gets a bad_message error.
	big := `{"type":"prompt","tags":"` + string(bytes.Repeat([]byte{'a'}, textReadLimit)) + `"}`
	require.NoError(t, cl.c.WriteMessage(websocket.TextMessage, []byte(big)))
	assert.Contains(t, cl.applyUntil("error")["message"], "message exceeds 65536 bytes")

	// A by-name swap that fails to decode is answered too.
	cl.sendJSON(map[string]any{"type": "swap_source", "use_server_source": true})
	assert.Contains(t, cl.applyUntil("swap_failed")["error"], "fixture_name")

	// Still in step: messages are answered in order, and slices flow.
	cl.sendJSON(map[string]any{"type": "prompt", "tags": "still alive"})
	evs = cl.eventsUntil("prompt_applied")
	assert.Equal(t, "still alive", evs[len(evs)-1]["tags"])
	cl.readSlices(3)
	logs := e.logs.String()
	assert.Contains(t, logs, "PCM follow-up too large")
	assert.Contains(t, logs, "ignoring a binary message where a JSON message was expected")
	e.stopAndCompare(t, cl)
}

// eventsUntil reads (applying slices and swap buffers) until an event of
// type typ and returns every JSON event seen, that one last.
func (cl *client) eventsUntil(typ string) []map[string]any {
	cl.t.Helper()
	var evs []map[string]any
	for {
		mt, b, err := cl.read()
		require.NoError(cl.t, err, "waiting for %s", typ)
		if mt == websocket.BinaryMessage {
			if cl.swapPending {
				require.NoError(cl.t, cl.mirror.ApplyF16(cl.ch, b))
				cl.swapPending = false
				continue
			}
			require.NoError(cl.t, cl.mirror.Apply(b))
			cl.slices++
			continue
		}
		var m map[string]any
		require.NoError(cl.t, json.Unmarshal(b, &m))
		cl.swapPending = cl.swapPending || m["type"] == "swap_ready"
		evs = append(evs, m)
		if m["type"] == typ {
			return evs
		}
	}
}
