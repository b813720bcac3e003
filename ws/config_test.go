package ws

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSessionConfigDefaults(t *testing.T) {
	c, err := ParseSessionConfig([]byte(`{}`))
	require.NoError(t, err)
	assert.Equal(t, DefaultSessionConfig(), c)
	assert.Equal(t, SessionConfig{
		Depth: 4, VAEWindow: 0.36, Steps: 8, WalkWindowS: 60, EnabledLoRAs: []string{},
		Prompt: "instrumental music", PromptB: "instrumental music", LoRAStrengths: map[string]float64{},
		SliceEncoding: EncodingDelta,
	}, c)
}

func TestParseSessionConfigTypicalClient(t *testing.T) {
	in := `{"sde":false,"lora":true,"depth":4,"vae_window":0.36,"crop":0,"steps":8,"fast_vae":false,
	"walk_window":true,"walk_window_s":60,"enabled_loras":["a","b"],"prompt":"lofi, piano","prompt_b":"jazz",
	"lora_strengths":{"a":0.7,"b":null},"fixture_name":"test.wav","use_server_fixture":true,
	"stem_source_mode":"instruments","client_id":"c1","key":"C major","future_field":{"x":[1,2]}}`
	c, err := ParseSessionConfig([]byte(in))
	require.NoError(t, err)
	assert.Equal(t, SessionConfig{
		LoRA: true, Depth: 4, VAEWindow: 0.36, Steps: 8, WalkWindow: true, WalkWindowS: 60,
		EnabledLoRAs: []string{"a", "b"}, Prompt: "lofi, piano", PromptB: "jazz",
		LoRAStrengths: map[string]float64{"a": 0.7}, FixtureName: "test.wav", UseServerFixture: true,
		StemSourceMode: "instruments", ClientID: "c1", SliceEncoding: EncodingDelta,
		Key: "C major", // demon honours key/time_signature at start (DEMON ignores them)
	}, c)
}

func TestParseSessionConfigClampsAndMisc(t *testing.T) {
	cases := []struct {
		name  string
		in    string
		check func(t *testing.T, c SessionConfig)
	}{
		{"depth low", `{"depth":0}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, 1, c.Depth) }},
		{"depth high", `{"depth":99}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, MaxPipelineDepth, c.Depth) }},
		{"depth truncates", `{"depth":3.9}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, 3, c.Depth) }},
		{"vae_window high (smoketest sends 6.0)", `{"vae_window":6.0}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, 0.36, c.VAEWindow) }},
		{"vae_window low", `{"vae_window":0}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, 0.04, c.VAEWindow) }},
		{"steps", `{"steps":40}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, 16, c.Steps) }},
		{"steps low", `{"steps":-3}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, 1, c.Steps) }},
		{"crop negative", `{"crop":-1}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, 0.0, c.Crop) }},
		{"crop high", `{"crop":1e9}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, 240.0, c.Crop) }},
		{"walk window", `{"walk_window_s":1}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, 10.0, c.WalkWindowS) }},
		{"lora strength", `{"lora_strengths":{"x":5,"y":-1}}`, func(t *testing.T, c SessionConfig) {
			assert.Equal(t, map[string]float64{"x": 1.8, "y": 0}, c.LoRAStrengths)
		}},
		{"prompt_b follows prompt", `{"prompt":"dub"}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, "dub", c.PromptB) }},
		{"null prompt_b follows prompt", `{"prompt":"dub","prompt_b":null}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, "dub", c.PromptB) }},
		{"empty prompt kept", `{"prompt":""}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, "", c.Prompt) }},
		{"nulls are absent", `{"depth":null,"fixture_name":null,"stem_source_mode":null}`, func(t *testing.T, c SessionConfig) {
			assert.Equal(t, DefaultSessionConfig(), c)
		}},
		{"legacy lora_path", `{"lora_path":"/a","lora_paths":["/b"]}`, func(t *testing.T, c SessionConfig) {
			assert.Equal(t, []string{"/a", "/b"}, c.LoRAPaths)
		}},
		{"slice_encoding raw", `{"slice_encoding":"raw"}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, EncodingRaw, c.SliceEncoding) }},
		{"other type ignored", `{"type":"params"}`, func(t *testing.T, c SessionConfig) { assert.Equal(t, DefaultSessionConfig(), c) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseSessionConfig([]byte(tc.in))
			require.NoError(t, err)
			tc.check(t, c)
		})
	}
}

func TestParseSessionConfigErrors(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		wantIs  error
		wantMsg string
	}{
		{"not json", `{"depth":`, ErrMalformed, "ws: session config: malformed message: invalid JSON at byte 9: unexpected end of JSON input"},
		{"array", `[1,2]`, ErrMalformed, "ws: session config: malformed message: want a JSON object, got array"},
		{"null", `null`, ErrMalformed, "ws: session config: malformed message: want a JSON object, got null"},
		{"upload socket", `{"type":"upload_track","name":"x"}`, ErrUploadFirstMessage, `ws: session config: first message is "upload_track", not a session config`},
		{"type not string", `{"type":3}`, ErrWrongType, `ws: session config: field "type": wrong field type: want string, got number`},
		{"depth string", `{"depth":"4"}`, ErrWrongType, `ws: session config: field "depth": wrong field type: want number, got string`},
		{"sde number", `{"sde":1}`, ErrWrongType, `ws: session config: field "sde": wrong field type: want boolean, got number`},
		{"prompt number", `{"prompt":5}`, ErrWrongType, `ws: session config: field "prompt": wrong field type: want string, got number`},
		{"enabled_loras mixed", `{"enabled_loras":["a",1]}`, ErrWrongType, `ws: session config: field "enabled_loras": wrong field type: want array of strings, got array`},
		{"lora_strengths string", `{"lora_strengths":{"a":"x"}}`, ErrWrongType, `ws: session config: field "lora_strengths": wrong field type: want object of numbers, got object`},
		{"stem mode", `{"stem_source_mode":"drums"}`, ErrOutOfRange, `ws: session config: field "stem_source_mode": value out of range: "drums" is not one of full, vocals, instruments`},
		{"slice encoding", `{"slice_encoding":"gzip"}`, ErrOutOfRange, `ws: session config: field "slice_encoding": value out of range: "gzip" is not one of raw, delta`},
		{"huge number", `{"depth":1e999}`, ErrOutOfRange, `ws: session config: field "depth": value out of range: not a finite float64`},
		{"first error wins in field order", `{"steps":"x","sde":"y"}`, ErrWrongType, `ws: session config: field "sde": wrong field type: want boolean, got string`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSessionConfig([]byte(tc.in))
			require.ErrorIs(t, err, tc.wantIs)
			require.EqualError(t, err, tc.wantMsg)
		})
	}
}

func TestFirstMessageKind(t *testing.T) {
	k, err := FirstMessageKind([]byte(`{"type":"upload_track","name":"a.wav"}`))
	require.NoError(t, err)
	assert.Equal(t, FirstUploadTrack, k)
	k, err = FirstMessageKind([]byte(`{"sde":false}`))
	require.NoError(t, err)
	assert.Equal(t, FirstSessionConfig, k)
	assert.Equal(t, "session_config", k.String())
	_, err = FirstMessageKind([]byte(`hello`))
	require.ErrorIs(t, err, ErrMalformed)
	_, err = FirstMessageKind([]byte(`{"type":[]}`))
	require.EqualError(t, err, `ws: first message: field "type": wrong field type: want string, got array`)
}

func TestClampDepth(t *testing.T) {
	c := DefaultSessionConfig()
	c.Depth = 8
	c.ClampDepth(4)
	assert.Equal(t, 4, c.Depth)
	c.ClampDepth(0)
	assert.Equal(t, 1, c.Depth)
}
