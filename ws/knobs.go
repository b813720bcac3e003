package ws

import (
	"encoding/json"
	"math"
	"sort"
	"strings"
)

// Knobs of params.raw (protocol.md §4.6). The server reads raw leniently:
// every known knob has a default and a range, a value of the wrong kind or
// out of its enumeration reads as the default, numbers are clamped, and
// unknown keys are kept (Knobs.Raw) but otherwise ignored.

// KnobKind is the value kind of a knob.
type KnobKind int

const (
	KnobNumber KnobKind = iota
	KnobInt
	KnobBool
	KnobEnum
)

// KnobSpec describes one known knob.
type KnobSpec struct {
	Name     string
	Kind     KnobKind
	Default  float64 // numbers, ints, bools (0/1)
	Min, Max float64
	Enum     []string // KnobEnum: allowed values; Enum[0] is the default
}

// Knob names (params.raw keys).
const (
	KnobSeed                = "seed"
	KnobDenoise             = "denoise"
	KnobHintStrength        = "hint_strength"
	KnobFeedback            = "feedback"
	KnobFeedbackDepth       = "feedback_depth"
	KnobShift               = "shift"
	KnobDCWScaler           = "dcw_scaler"
	KnobDCWHighScaler       = "dcw_high_scaler"
	KnobDCWMultBlend        = "dcw_mult_blend"
	KnobDCWMagPhase         = "dcw_mag_phase"
	KnobDCWSoftThresh       = "dcw_soft_thresh"
	KnobGuidanceScale       = "guidance_scale"
	KnobCFGRescale          = "cfg_rescale"
	KnobStepsOverride       = "steps_override"
	KnobLoRADefaultStrength = "lora_default_strength"
	KnobDCWEnabled          = "dcw_enabled"
	KnobDCWMode             = "dcw_mode"
	KnobDCWWavelet          = "dcw_wavelet"
	KnobRCFGMode            = "rcfg_mode"
	KnobSDEAmp              = "sde_amp"
	KnobPeriodicity         = "periodicity"
	// KnobLoRAStrengthPrefix prefixes per-LoRA strength knobs lora_str_<id>.
	KnobLoRAStrengthPrefix = "lora_str_"
)

// ChannelKnobs are the latent channel-gain knobs, each 0..3, default 1.
var ChannelKnobs = []string{"ch_g0", "ch_g1", "ch_g2", "ch_g3", "ch_g4", "ch_g5", "ch_g6", "ch_g7", "ch13", "ch14", "ch19", "ch23", "ch29", "ch56"}

// knobSpecs is the table of known knobs. Defaults are demon's: they follow
// the engine defaults where engine.md states them (shift 3, steps 8, DCW
// double/haar 0.05/0.02, seed 0) and neutral values otherwise.
var knobSpecs = func() map[string]KnobSpec {
	specs := []KnobSpec{
		{Name: KnobSeed, Kind: KnobInt, Default: 0, Min: 0, Max: math.MaxUint32},
		{Name: KnobDenoise, Kind: KnobNumber, Default: 0.5, Min: 0, Max: 1},
		{Name: KnobHintStrength, Kind: KnobNumber, Default: 1, Min: 0, Max: 1},
		{Name: KnobFeedback, Kind: KnobNumber, Default: 0, Min: 0, Max: 1},
		{Name: KnobFeedbackDepth, Kind: KnobInt, Default: 1, Min: 1, Max: 8},
		{Name: KnobShift, Kind: KnobNumber, Default: 3, Min: 1, Max: 6},
		{Name: KnobDCWScaler, Kind: KnobNumber, Default: 0.05, Min: 0, Max: 0.5},
		{Name: KnobDCWHighScaler, Kind: KnobNumber, Default: 0.02, Min: 0, Max: 0.5},
		{Name: KnobDCWMultBlend, Kind: KnobNumber, Default: 0, Min: 0, Max: 1},
		{Name: KnobDCWMagPhase, Kind: KnobNumber, Default: 0, Min: 0, Max: 1},
		{Name: KnobDCWSoftThresh, Kind: KnobNumber, Default: 0, Min: 0, Max: 0.3},
		{Name: KnobGuidanceScale, Kind: KnobNumber, Default: 1, Min: 0, Max: 15},
		{Name: KnobCFGRescale, Kind: KnobNumber, Default: 0, Min: 0, Max: 1},
		{Name: KnobStepsOverride, Kind: KnobInt, Default: 8, Min: 1, Max: 16},
		{Name: KnobLoRADefaultStrength, Kind: KnobNumber, Default: 1, Min: 0, Max: MaxLoRAStrength},
		{Name: KnobSDEAmp, Kind: KnobNumber, Default: 0.5, Min: 0, Max: 1},
		{Name: KnobPeriodicity, Kind: KnobNumber, Default: 0, Min: 0, Max: 64},
		{Name: KnobDCWEnabled, Kind: KnobBool, Default: 1},
		{Name: KnobDCWMode, Kind: KnobEnum, Enum: []string{"double", "low", "high", "pix"}},
		{Name: KnobDCWWavelet, Kind: KnobEnum, Enum: []string{"haar", "db4", "sym8", "db8"}},
		{Name: KnobRCFGMode, Kind: KnobEnum, Enum: []string{"off", "initialize", "self", "full"}},
	}
	for _, ch := range ChannelKnobs {
		specs = append(specs, KnobSpec{Name: ch, Kind: KnobNumber, Default: 1, Min: 0, Max: 3})
	}
	m := make(map[string]KnobSpec, len(specs))
	for _, s := range specs {
		m[s.Name] = s
	}
	return m
}()

// LookupKnob returns the spec of a known knob. lora_str_<id> knobs are
// reported as numbers in [0, MaxLoRAStrength] with default 0.
func LookupKnob(name string) (KnobSpec, bool) {
	if s, ok := knobSpecs[name]; ok {
		return s, true
	}
	if strings.HasPrefix(name, KnobLoRAStrengthPrefix) && len(name) > len(KnobLoRAStrengthPrefix) {
		return KnobSpec{Name: name, Kind: KnobNumber, Default: 0, Min: 0, Max: MaxLoRAStrength}, true
	}
	return KnobSpec{}, false
}

// KnobNames returns the names of all fixed knobs, sorted.
func KnobNames() []string {
	out := make([]string, 0, len(knobSpecs))
	for n := range knobSpecs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// KnobValue is one raw value: a number, a string or a boolean.
type KnobValue struct {
	Kind KnobValueKind
	Num  float64
	Str  string
	Bool bool
}

// KnobValueKind is the JSON kind of a raw knob value.
type KnobValueKind int

const (
	ValueNumber KnobValueKind = iota
	ValueString
	ValueBool
)

// MarshalJSON writes the value back in its JSON kind.
func (v KnobValue) MarshalJSON() ([]byte, error) {
	switch v.Kind {
	case ValueString:
		return json.Marshal(v.Str)
	case ValueBool:
		return json.Marshal(v.Bool)
	}
	return json.Marshal(v.Num)
}

// Knobs is the raw knob map of one params message. Values of other JSON
// kinds (null, arrays, objects) are dropped while decoding.
type Knobs map[string]KnobValue

func parseKnobs(r json.RawMessage) (Knobs, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r, &m); err != nil {
		return nil, err
	}
	k := make(Knobs, len(m))
	for name, v := range m {
		switch jsonKind(v) {
		case "number":
			var f float64
			if json.Unmarshal(v, &f) == nil {
				k[name] = KnobValue{Kind: ValueNumber, Num: f}
			}
		case "string":
			var s string
			if json.Unmarshal(v, &s) == nil {
				k[name] = KnobValue{Kind: ValueString, Str: s}
			}
		case "boolean":
			k[name] = KnobValue{Kind: ValueBool, Bool: v[0] == 't'}
		}
	}
	return k, nil
}

// Float returns a numeric knob clamped to its range, or its default when
// absent or not a number (a boolean reads as 0/1). Unknown knobs read as
// their raw number, or 0.
func (k Knobs) Float(name string) float64 {
	spec, known := LookupKnob(name)
	v, ok := k[name]
	var f float64
	switch {
	case ok && v.Kind == ValueNumber:
		f = v.Num
	case ok && v.Kind == ValueBool && v.Bool:
		f = 1
	case ok && v.Kind == ValueBool:
		f = 0
	default:
		return spec.Default
	}
	if known && spec.Kind != KnobEnum && spec.Kind != KnobBool {
		f = clamp(f, spec.Min, spec.Max)
	}
	return f
}

// Int returns a knob truncated to an integer (see Float).
func (k Knobs) Int(name string) int { return int(math.Trunc(k.Float(name))) }

// Bool returns a boolean knob: true/false, or a number ≠ 0; otherwise the
// default.
func (k Knobs) Bool(name string) bool {
	spec, _ := LookupKnob(name)
	v, ok := k[name]
	switch {
	case ok && v.Kind == ValueBool:
		return v.Bool
	case ok && v.Kind == ValueNumber:
		return v.Num != 0
	}
	return spec.Default != 0
}

// String returns an enumerated knob, or its default when absent, not a
// string, or not one of the allowed values. For unknown knobs it returns
// the raw string ("" if none).
func (k Knobs) String(name string) string {
	spec, known := LookupKnob(name)
	v, ok := k[name]
	if !known || spec.Kind != KnobEnum {
		if ok && v.Kind == ValueString {
			return v.Str
		}
		return ""
	}
	if ok && v.Kind == ValueString {
		for _, e := range spec.Enum {
			if e == v.Str {
				return e
			}
		}
	}
	return spec.Enum[0]
}

// Seed returns the seed knob (0..2^32−1).
func (k Knobs) Seed() uint32 { return uint32(k.Float(KnobSeed)) }

// Denoise returns the denoise knob (0..1).
func (k Knobs) Denoise() float64 { return k.Float(KnobDenoise) }

// HintStrength returns hint_strength (0..1).
func (k Knobs) HintStrength() float64 { return k.Float(KnobHintStrength) }

// Feedback returns feedback (0..1).
func (k Knobs) Feedback() float64 { return k.Float(KnobFeedback) }

// FeedbackDepth returns feedback_depth (1..8).
func (k Knobs) FeedbackDepth() int { return k.Int(KnobFeedbackDepth) }

// Shift returns shift (1..6).
func (k Knobs) Shift() float64 { return k.Float(KnobShift) }

// StepsOverride returns steps_override (1..16).
func (k Knobs) StepsOverride() int { return k.Int(KnobStepsOverride) }

// GuidanceScale returns guidance_scale (0..15).
func (k Knobs) GuidanceScale() float64 { return k.Float(KnobGuidanceScale) }

// CFGRescale returns cfg_rescale (0..1).
func (k Knobs) CFGRescale() float64 { return k.Float(KnobCFGRescale) }

// RCFGMode returns rcfg_mode ("off", "initialize", "self" or "full").
func (k Knobs) RCFGMode() string { return k.String(KnobRCFGMode) }

// DCW holds the DCW knob group.
type DCW struct {
	Enabled             bool
	Mode, Wavelet       string
	Scaler, HighScaler  float64
	MultBlend, MagPhase float64
	SoftThresh          float64
}

// DCW returns the DCW knob group.
func (k Knobs) DCW() DCW {
	return DCW{
		Enabled:    k.Bool(KnobDCWEnabled),
		Mode:       k.String(KnobDCWMode),
		Wavelet:    k.String(KnobDCWWavelet),
		Scaler:     k.Float(KnobDCWScaler),
		HighScaler: k.Float(KnobDCWHighScaler),
		MultBlend:  k.Float(KnobDCWMultBlend),
		MagPhase:   k.Float(KnobDCWMagPhase),
		SoftThresh: k.Float(KnobDCWSoftThresh),
	}
}

// ChannelGains returns the 14 channel-gain knobs in ChannelKnobs order.
func (k Knobs) ChannelGains() [14]float64 {
	var g [14]float64
	for i, n := range ChannelKnobs {
		g[i] = k.Float(n)
	}
	return g
}

// LoRAStrengths returns the lora_str_<id> knobs by id, clamped to
// [0, MaxLoRAStrength].
func (k Knobs) LoRAStrengths() map[string]float64 {
	out := map[string]float64{}
	for name := range k {
		if id, ok := strings.CutPrefix(name, KnobLoRAStrengthPrefix); ok && id != "" {
			out[id] = k.Float(name)
		}
	}
	return out
}

// Equal reports whether two raw maps are identical (the idle-pause rule
// counts a params message as activity only when raw changed).
func (k Knobs) Equal(o Knobs) bool {
	if len(k) != len(o) {
		return false
	}
	for n, v := range k {
		if w, ok := o[n]; !ok || w != v {
			return false
		}
	}
	return true
}
