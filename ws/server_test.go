package ws

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEncodeServerMessage(t *testing.T) {
	cases := []struct {
		m    ServerMessage
		want string
	}{
		{Ready{Channels: 2, Duration: 60, SampleRate: 48000, PipelineDepth: 4, MaxPipelineDepth: ptr(8), SessionID: "abcd1234"},
			`{"type":"ready","channels":2,"duration":60,"sample_rate":48000,"lora_catalog":[],"lora_dir":"","lora_pending_enable":[],"bpm":null,"key":null,"time_signature":null,"checkpoint":"","checkpoint_scale":null,"pipeline_depth":4,"max_pipeline_depth":8,"session_id":"abcd1234"}`},
		{Error{Code: CodeEngineNotBuilt, Message: "no engine", BuildCommand: "make engines", DurationS: ptr(60.0)},
			`{"type":"error","code":"engine_not_built","message":"no engine","build_command":"make engines","duration_s":60}`},
		{Error{Code: CodeBadSource, Message: "too short"}, `{"type":"error","code":"bad_source","message":"too short"}`},
		{ParamsUpdate{Params: map[string]any{"num_gens": 0, "tick_ms": 0, "dec_ms": 0, "_prompt": "x"}},
			`{"type":"params_update","params":{"_prompt":"x","dec_ms":0,"num_gens":0,"tick_ms":0}}`},
		{ParamsEcho{Raw: Knobs{"denoise": {Num: 0.5}, "dcw_mode": {Kind: ValueString, Str: "low"}}},
			`{"type":"params_echo","raw":{"dcw_mode":"low","denoise":0.5}}`},
		{PromptBlendEcho{Value: 0.25}, `{"type":"prompt_blend_echo","value":0.25}`},
		{PromptApplied{Tags: "lofi"}, `{"type":"prompt_applied","tags":"lofi"}`},
		{LoRACatalog{}, `{"type":"lora_catalog","catalog":[]}`},
		{DepthApplied{Value: 2}, `{"type":"depth_applied","value":2}`},
		{SwapReady{Duration: 30, SampleRate: 48000, Channels: 2, BPM: ptr(96), Key: ptr("C major"), FixtureName: ptr("demo_groove_C_30s.wav")},
			`{"type":"swap_ready","duration":30,"sample_rate":48000,"channels":2,"bpm":96,"key":"C major","time_signature":null,"fixture_name":"demo_groove_C_30s.wav"}`},
		{SwapFailed{Error: "server source load failed: nope"}, `{"type":"swap_failed","error":"server source load failed: nope"}`},
		{StemAssets{FixtureName: "u.wav", SampleRate: 48000, Channels: 2, Frames: 9600, Stems: Strings{"vocals", "instruments"}, SourceMode: "full"},
			`{"type":"stem_assets","fixture_name":"u.wav","sample_rate":48000,"channels":2,"frames":9600,"stems":["vocals","instruments"],"source_mode":"full"}`},
		{StemFailed{FixtureName: "u.wav", Error: "x"}, `{"type":"stem_failed","fixture_name":"u.wav","error":"x"}`},
		{TimbreSet{Name: "t", Duration: 12.5}, `{"type":"timbre_set","name":"t","duration":12.5}`},
		{TimbreCleared{}, `{"type":"timbre_cleared"}`},
		{TimbreFailed{Error: "e"}, `{"type":"timbre_failed","error":"e"}`},
		{StructureSet{Name: "s", Duration: 3}, `{"type":"structure_set","name":"s","duration":3}`},
		{StructureCleared{}, `{"type":"structure_cleared"}`},
		{StructureFailed{Error: "dropped after swap: x"}, `{"type":"structure_failed","error":"dropped after swap: x"}`},
		{UploadOK{Name: "a (2).wav", BPM: 120, Key: "A minor", TimeSignature: "4", DurationS: 60, Samples: 2880000},
			`{"type":"upload_ok","name":"a (2).wav","bpm":120,"key":"A minor","time_signature":"4","duration_s":60,"samples":2880000}`},
		{UploadFailed{Error: "expected binary PCM frame after upload header"}, `{"type":"upload_failed","error":"expected binary PCM frame after upload header"}`},
		{NotSupportedFor("set_timbre_source"), `{"type":"not_supported","request":"set_timbre_source","message":"demon does not support \"set_timbre_source\""}`},
	}
	for _, c := range cases {
		t.Run(c.m.MessageType(), func(t *testing.T) {
			b, err := EncodeServerMessage(c.m)
			require.NoError(t, err)
			assert.Equal(t, c.want, string(b))
		})
	}
	_, err := EncodeServerMessage(Ready{Duration: math.NaN()})
	require.ErrorContains(t, err, "ws: encode ready: json: unsupported value: NaN")
}

func TestLoRACatalogEntryShape(t *testing.T) {
	b, err := EncodeServerMessage(LoRACatalog{Catalog: LoRACatalogEntries{{ID: "x", Name: "X", Path: "/l/x.safetensors", State: LoRAEnabled, Strength: 1,
		Metadata: LoRAMetadata{ID: "x", Name: "X", HasMetadata: false}}}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"type":"lora_catalog","catalog":[{"id":"x","name":"X","path":"/l/x.safetensors","state":"enabled","strength":1,"materialized_bytes":0,
		"metadata":{"id":"x","name":"X","description":null,"primary_trigger_word":null,"trigger_words":[],"recommended_strength":null,"recommended_steps":null,
		"recommended_shift":null,"recommended_guidance":null,"primary_genre":null,"secondary_genres":[],"tags":[],"moods":[],"base_model":null,"base_model_scale":null,"has_metadata":false}}]}`, string(b))
}

func TestPolicyFor(t *testing.T) {
	assert.Equal(t, Coalesce, PolicyFor(TypeParamsUpdate))
	assert.Equal(t, Coalesce, PolicyFor(TypeParamsEcho))
	assert.Equal(t, Coalesce, PolicyFor(TypePromptBlendEcho))
	for _, typ := range []string{TypeSwapReady, TypeLoRACatalog, TypeDepthApplied, TypePromptApplied, TypeTimbreSet, TypeStemAssets, TypeNotSupported} {
		assert.Equal(t, NeverDrop, PolicyFor(typ), typ)
	}
}
