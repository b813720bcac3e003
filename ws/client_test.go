package ws

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func ptr[T any](v T) *T { return &v }

func TestDecodeClientMessage(t *testing.T) {
	cases := []struct {
		in      string
		want    Message
		wantPCM bool
	}{
		{`{"type":"params","raw":{"denoise":0.4,"dcw_mode":"low","dcw_enabled":true,"junk":null},"playback_pos":12.5}`,
			&Params{Raw: Knobs{"denoise": {Kind: ValueNumber, Num: 0.4}, "dcw_mode": {Kind: ValueString, Str: "low"}, "dcw_enabled": {Kind: ValueBool, Bool: true}},
				PlaybackPos: 12.5, HasPlaybackPos: true}, false},
		{`{"type":"params","raw":{}}`, &Params{Raw: Knobs{}}, false},
		{`{"type":"params","raw":{},"playback_pos":-3}`, &Params{Raw: Knobs{}, HasPlaybackPos: true}, false},
		{`{"type":"prompt","tags":"lofi"}`, &Prompt{Tags: "lofi"}, false},
		{`{"type":"prompt","tags":"a","tags_b":"b","key":"G# minor","time_signature":"3"}`,
			&Prompt{Tags: "a", TagsB: ptr("b"), Key: ptr("G# minor"), TimeSignature: ptr("3")}, false},
		{`{"type":"set_prompt_blend","value":1.5}`, &SetPromptBlend{Value: 1}, false},
		{`{"type":"set_timbre_strength","value":-1}`, &SetTimbreStrength{Value: 0}, false},
		{`{"type":"set_depth","value":2.6}`, &SetDepth{Value: 3}, false},
		{`{"type":"set_depth","value":100}`, &SetDepth{Value: MaxPipelineDepth}, false},
		{`{"type":"loop_band","start_sec":null,"end_sec":null}`, &LoopBand{}, false},
		{`{"type":"loop_band","start_sec":-1,"end_sec":4}`, &LoopBand{StartSec: ptr(0.0), EndSec: ptr(4.0)}, false},
		{`{"type":"enable_lora","id":"x","strength":3}`, &EnableLoRA{ID: "x", Strength: ptr(1.8)}, false},
		{`{"type":"enable_lora","id":"x"}`, &EnableLoRA{ID: "x"}, false},
		{`{"type":"disable_lora","id":"x"}`, &DisableLoRA{ID: "x"}, false},
		{`{"type":"set_timbre_source","name":"mine.wav"}`, &SetTimbreSource{Name: "mine.wav"}, true},
		{`{"type":"set_timbre_fixture","name":"f.wav"}`, &SetTimbreFixture{Name: "f.wav"}, false},
		{`{"type":"clear_timbre_source"}`, &ClearTimbreSource{}, false},
		{`{"type":"set_structure_source","name":""}`, &SetStructureSource{Name: ""}, true},
		{`{"type":"set_structure_fixture","name":"f.wav"}`, &SetStructureFixture{Name: "f.wav"}, false},
		{`{"type":"clear_structure_source"}`, &ClearStructureSource{}, false},
		{`{"type":"swap_source","use_server_source":true,"fixture_name":"f.wav","stem_source_mode":"vocals","tags":"t"}`,
			&SwapSource{UseServerSource: true, FixtureName: ptr("f.wav"), StemSourceMode: ptr("vocals"), Tags: ptr("t")}, false},
		{`{"type":"swap_source","fixture_name":"up.wav","key":"C major","time_signature":"4"}`,
			&SwapSource{FixtureName: ptr("up.wav"), Key: ptr("C major"), TimeSignature: ptr("4")}, true},
		{`{"type":"swap_source"}`, &SwapSource{}, true},
		{`{"type":"upload_track","name":"song.wav","key":"A minor"}`, &UploadTrack{Name: "song.wav", Key: ptr("A minor")}, true},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			m, err := DecodeClientMessage([]byte(c.in))
			require.NoError(t, err)
			assert.Equal(t, c.want, m)
			assert.Equal(t, c.wantPCM, m.ExpectsPCM())
			assert.Equal(t, c.wantPCM, PCMFollows([]byte(c.in)), "PCMFollows agrees with ExpectsPCM")
			typ, err := MessageTypeOf([]byte(c.in))
			require.NoError(t, err)
			assert.Equal(t, typ, m.Type())
		})
	}
}

// TestPCMFollowsForMessagesThatFailToDecode: the follow-up rule is judged
// from the type, so a refused message still owns its PCM frame.
func TestPCMFollowsForMessagesThatFailToDecode(t *testing.T) {
	for in, want := range map[string]bool{
		`{"type":"swap_source","stem_source_mode":"bogus"}`:                          true,
		`{"type":"swap_source","use_server_source":true,"stem_source_mode":"bogus"}`: false,
		`{"type":"swap_source","use_server_source":true}`:                            false,
		`{"type":"swap_source","use_server_source":"yes"}`:                           true,
		`{"type":"set_timbre_source"}`:                                               true,
		`{"type":"set_structure_source","name":5}`:                                   true,
		`{"type":"upload_track"}`:                                                    true,
		`{"type":"set_timbre_fixture"}`:                                              false,
		`{"type":"prompt"}`:                                                          false,
		`{"type":"teleport"}`:                                                        false,
		`{"type":"swap_source"`:                                                      false,
		`[1]`:                                                                        false,
	} {
		_, err := DecodeClientMessage([]byte(in))
		require.Error(t, err, in)
		assert.Equal(t, want, PCMFollows([]byte(in)), in)
	}
}

func TestLoopBandArmed(t *testing.T) {
	assert.False(t, (&LoopBand{}).Armed())
	assert.False(t, (&LoopBand{StartSec: ptr(2.0), EndSec: ptr(2.0)}).Armed())
	assert.True(t, (&LoopBand{StartSec: ptr(1.0), EndSec: ptr(2.0)}).Armed())
}

func TestDecodeClientMessageErrors(t *testing.T) {
	cases := []struct {
		in      string
		wantIs  error
		wantMsg string
	}{
		{`not json`, ErrMalformed, "ws: message: malformed message: invalid JSON at byte 2: invalid character 'o' in literal null (expecting 'u')"},
		{`"params"`, ErrMalformed, "ws: message: malformed message: want a JSON object, got string"},
		{`{}`, ErrMissingField, `ws: message: field "type": missing required field`},
		{`{"type":null}`, ErrMissingField, `ws: message: field "type": missing required field`},
		{`{"type":7}`, ErrWrongType, `ws: message: field "type": wrong field type: want string, got number`},
		{`{"type":"params"}`, ErrMissingField, `ws: params: field "raw": missing required field`},
		{`{"type":"params","raw":[1]}`, ErrWrongType, `ws: params: field "raw": wrong field type: want object, got array`},
		{`{"type":"params","raw":{},"playback_pos":"1"}`, ErrWrongType, `ws: params: field "playback_pos": wrong field type: want number, got string`},
		{`{"type":"prompt"}`, ErrMissingField, `ws: prompt: field "tags": missing required field`},
		{`{"type":"prompt","tags":["a"]}`, ErrWrongType, `ws: prompt: field "tags": wrong field type: want string, got array`},
		{`{"type":"prompt","tags":"a","time_signature":"5"}`, ErrOutOfRange, `ws: prompt: field "time_signature": value out of range: "5" is not one of 2, 3, 4, 6`},
		{`{"type":"prompt","tags":"a","time_signature":4}`, ErrWrongType, `ws: prompt: field "time_signature": wrong field type: want string, got number`},
		{`{"type":"set_prompt_blend"}`, ErrMissingField, `ws: set_prompt_blend: field "value": missing required field`},
		{`{"type":"set_prompt_blend","value":"0.5"}`, ErrWrongType, `ws: set_prompt_blend: field "value": wrong field type: want number, got string`},
		{`{"type":"set_timbre_strength","value":true}`, ErrWrongType, `ws: set_timbre_strength: field "value": wrong field type: want number, got boolean`},
		{`{"type":"set_depth","value":null}`, ErrMissingField, `ws: set_depth: field "value": missing required field`},
		{`{"type":"loop_band","start_sec":"a"}`, ErrWrongType, `ws: loop_band: field "start_sec": wrong field type: want number, got string`},
		{`{"type":"enable_lora"}`, ErrMissingField, `ws: enable_lora: field "id": missing required field`},
		{`{"type":"enable_lora","id":""}`, ErrOutOfRange, `ws: enable_lora: field "id": value out of range: must not be empty`},
		{`{"type":"enable_lora","id":"x","strength":"hi"}`, ErrWrongType, `ws: enable_lora: field "strength": wrong field type: want number, got string`},
		{`{"type":"disable_lora","id":{}}`, ErrWrongType, `ws: disable_lora: field "id": wrong field type: want string, got object`},
		{`{"type":"set_timbre_source"}`, ErrMissingField, `ws: set_timbre_source: field "name": missing required field`},
		{`{"type":"set_timbre_fixture","name":""}`, ErrOutOfRange, `ws: set_timbre_fixture: field "name": value out of range: must not be empty`},
		{`{"type":"set_structure_fixture"}`, ErrMissingField, `ws: set_structure_fixture: field "name": missing required field`},
		{`{"type":"swap_source","use_server_source":true}`, ErrMissingField, `ws: swap_source: field "fixture_name": missing required field`},
		{`{"type":"swap_source","use_server_source":true,"fixture_name":""}`, ErrOutOfRange, `ws: swap_source: field "fixture_name": value out of range: must not be empty with use_server_source`},
		{`{"type":"swap_source","use_server_source":"yes"}`, ErrWrongType, `ws: swap_source: field "use_server_source": wrong field type: want boolean, got string`},
		{`{"type":"swap_source","stem_source_mode":"drums"}`, ErrOutOfRange, `ws: swap_source: field "stem_source_mode": value out of range: "drums" is not one of full, vocals, instruments`},
		{`{"type":"upload_track"}`, ErrMissingField, `ws: upload_track: field "name": missing required field`},
		{`{"type":"upload_track","name":"a","time_signature":"7"}`, ErrOutOfRange, `ws: upload_track: field "time_signature": value out of range: "7" is not one of 2, 3, 4, 6`},
		{`{"type":"record_start"}`, ErrUnknownType, `ws: unknown message type "record_start"`},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			m, err := DecodeClientMessage([]byte(c.in))
			require.Nil(t, m)
			require.ErrorIs(t, err, c.wantIs)
			require.EqualError(t, err, c.wantMsg)
		})
	}
	_, err := DecodeClientMessage([]byte(`{"type":"video_start","x":1}`))
	var ute *UnknownTypeError
	require.True(t, errors.As(err, &ute))
	assert.Equal(t, "video_start", ute.Type)
	assert.Equal(t, NotSupported{Request: "video_start", Message: `demon does not support "video_start"`}, NotSupportedFor(ute.Type))
}

func TestDecodeUploadTrackDirect(t *testing.T) {
	_, err := DecodeUploadTrack([]byte(`{"type":"params","name":"x"}`))
	require.EqualError(t, err, `ws: upload_track: field "type": value out of range: want "upload_track", got "params"`)
	m, err := DecodeUploadTrack([]byte(`{"type":"upload_track","name":"x","time_signature":"6"}`))
	require.NoError(t, err)
	assert.Equal(t, &UploadTrack{Name: "x", TimeSignature: ptr("6")}, m)
}
