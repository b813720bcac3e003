package ws

import (
	"testing"

	"github.com/demon-audio/demon/session"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func decodeRaw(t *testing.T, raw string) Knobs {
	t.Helper()
	m, err := DecodeClientMessage([]byte(`{"type":"params","raw":` + raw + `}`))
	require.NoError(t, err)
	return m.(*Params).Raw
}

func TestKnobDefaults(t *testing.T) {
	k := decodeRaw(t, `{}`)
	assert.Equal(t, uint32(0), k.Seed())
	assert.Equal(t, 0.5, k.Denoise())
	assert.Equal(t, 1.0, k.HintStrength())
	assert.Equal(t, 0.0, k.Feedback())
	assert.Equal(t, 1, k.FeedbackDepth())
	assert.Equal(t, 3.0, k.Shift())
	assert.Equal(t, 8, k.StepsOverride())
	assert.Equal(t, 1.0, k.GuidanceScale())
	assert.Equal(t, 0.0, k.CFGRescale())
	assert.Equal(t, "off", k.RCFGMode())
	assert.Equal(t, DCW{Enabled: true, Mode: "double", Wavelet: "haar", Scaler: 0.05, HighScaler: 0.02}, k.DCW())
	g := k.ChannelGains()
	for _, v := range g {
		assert.Equal(t, 1.0, v)
	}
	assert.Empty(t, k.LoRAStrengths())
	assert.Len(t, KnobNames(), 21+len(ChannelKnobs))
}

func TestKnobAccessors(t *testing.T) {
	k := decodeRaw(t, `{"seed":4294967296,"denoise":2,"feedback_depth":5.7,"shift":0,"dcw_enabled":false,
		"dcw_mode":"pix","dcw_wavelet":"bogus","rcfg_mode":5,"ch_g3":9,"ch56":0.25,
		"lora_str_abc":2.5,"lora_str_":1,"steps_override":"12","custom":"x","nested":{"a":1}}`)
	assert.Equal(t, uint32(4294967295), k.Seed(), "clamped to u32")
	assert.Equal(t, 1.0, k.Denoise())
	assert.Equal(t, 5, k.FeedbackDepth())
	assert.Equal(t, 1.0, k.Shift())
	assert.Equal(t, 8, k.StepsOverride(), "wrong kind reads as default")
	d := k.DCW()
	assert.False(t, d.Enabled)
	assert.Equal(t, "pix", d.Mode)
	assert.Equal(t, "haar", d.Wavelet, "unknown enum value reads as default")
	assert.Equal(t, "off", k.RCFGMode())
	g := k.ChannelGains()
	assert.Equal(t, 3.0, g[3])
	assert.Equal(t, 0.25, g[13])
	assert.Equal(t, map[string]float64{"abc": 1.8}, k.LoRAStrengths())
	assert.Equal(t, "x", k.String("custom"), "unknown keys are kept")
	_, has := k["nested"]
	assert.False(t, has, "objects are dropped")
	assert.True(t, k.Equal(decodeRaw(t, `{"seed":4294967296,"denoise":2,"feedback_depth":5.7,"shift":0,"dcw_enabled":false,
		"dcw_mode":"pix","dcw_wavelet":"bogus","rcfg_mode":5,"ch_g3":9,"ch56":0.25,
		"lora_str_abc":2.5,"lora_str_":1,"steps_override":"12","custom":"x"}`)))
	assert.False(t, k.Equal(decodeRaw(t, `{"seed":1}`)))
}

// TestAppliedAndIgnoredKnobsAreHonest: every knob demon claims to apply
// changes the session controls, and every knob it reports as ignored does
// not.
func TestAppliedAndIgnoredKnobsAreHonest(t *testing.T) {
	var base session.Controls
	applyKnobs(&base, Knobs{})
	other := func(spec KnobSpec) KnobValue {
		switch spec.Kind {
		case KnobEnum:
			return KnobValue{Kind: ValueString, Str: spec.Enum[len(spec.Enum)-1]}
		case KnobBool:
			return KnobValue{Kind: ValueBool, Bool: spec.Default == 0}
		}
		if spec.Max != spec.Default {
			return KnobValue{Kind: ValueNumber, Num: spec.Max}
		}
		return KnobValue{Kind: ValueNumber, Num: spec.Min}
	}
	names := append(KnobNames(), KnobLoRAStrengthPrefix+"x")
	for _, name := range names {
		spec, ok := LookupKnob(name)
		require.True(t, ok, name)
		var ct session.Controls
		applyKnobs(&ct, Knobs{name: other(spec)})
		if appliedKnobs[name] {
			assert.NotEqual(t, base, ct, "%s is applied", name)
			assert.False(t, ignoredKnob(name), name)
			continue
		}
		assert.Equal(t, base, ct, "%s has no effect on the controls", name)
		assert.Equal(t, name != KnobLoRADefaultStrength, ignoredKnob(name), name)
	}
	assert.False(t, ignoredKnob("my_own_key"), "unknown keys are not reported")
}
