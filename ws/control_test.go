package ws

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Control-bus commands (protocol.md §9) reach a live session through its
// connection: knob and blend changes are echoed to the browser, everything
// else is applied with its ack on the browser's socket.
func TestControlBusCommands(t *testing.T) {
	e := newEnv(t, envOptions{})
	cl := e.startClient(t, fixtureConfig(nil), nil)
	cl.readSlices(1)
	sess := e.mgr.List()[0]
	blendBefore := sess.Controls().PromptBlend
	command := func(v any, pcm []byte) error {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return e.srv.Command(sess.ID, b, pcm)
	}

	// Echoed, not applied: the browser's tween re-sends them as its own.
	require.NoError(t, command(map[string]any{"type": "set_prompt_blend", "value": 0.8}, nil))
	assert.InDelta(t, 0.8, cl.applyUntil("prompt_blend_echo")["value"], 1e-9)
	require.NoError(t, command(map[string]any{"type": "params", "raw": map[string]any{"denoise": 0.3}}, nil))
	assert.Equal(t, map[string]any{"denoise": 0.3}, cl.applyUntil("params_echo")["raw"])
	assert.Equal(t, blendBefore, sess.Controls().PromptBlend, "an echoed blend is not applied")

	// Applied, with the ack on the browser's socket.
	require.NoError(t, command(map[string]any{"type": "set_depth", "value": 3}, nil))
	assert.EqualValues(t, 3, cl.applyUntil("depth_applied")["value"])
	assert.Equal(t, 3, sess.Controls().Depth)
	require.NoError(t, command(map[string]any{"type": "prompt", "tags": "slow dub"}, nil))
	assert.Equal(t, "slow dub", cl.applyUntil("prompt_applied")["tags"])
	require.NoError(t, command(map[string]any{"type": "swap_source", "fixture_name": "bus.wav"}, AppendPCMFrame(nil, 2, testPCM(6))))
	assert.EqualValues(t, 6, cl.applyUntil("swap_ready")["duration"])
	cl.applyUntil("swap_buffer")

	// Refused with a reason, nothing sent to the browser.
	for _, tc := range []struct {
		name string
		id   string
		cmd  string
		pcm  []byte
		want error
	}{
		{"unknown session", "nope", `{"type":"set_depth","value":2}`, nil, ErrNoSession},
		{"malformed JSON", sess.ID, `{"type":`, nil, ErrBadCommand},
		{"unknown type", sess.ID, `{"type":"teleport"}`, nil, ErrBadCommand},
		{"PCM missing", sess.ID, `{"type":"swap_source","fixture_name":"x.wav"}`, nil, ErrBadCommand},
		{"PCM unexpected", sess.ID, `{"type":"set_depth","value":2}`, AppendPCMFrame(nil, 2, testPCM(0.1)), ErrBadCommand},
		{"upload_track", sess.ID, `{"type":"upload_track","name":"a.wav"}`, AppendPCMFrame(nil, 2, testPCM(0.1)), ErrBadCommand},
	} {
		err := e.srv.Command(tc.id, []byte(tc.cmd), tc.pcm)
		assert.ErrorIs(t, err, tc.want, tc.name)
	}
	assert.Equal(t, 3, sess.Controls().Depth, "refused commands change nothing")

	cl.readSlices(2)
	e.stopAndCompare(t, cl)
	assert.ErrorIs(t, e.srv.Command(sess.ID, []byte(`{"type":"set_depth","value":2}`), nil), ErrNoSession, "a closed session takes no commands")
}
