package ws

import (
	"fmt"
	"math"
)

// Session config: the first text message of a session socket
// (protocol.md §3.1). Parsing is permissive the way the reference server is:
// every field is optional, unknown keys are ignored and null counts as
// absent. Unlike the reference, a field of the wrong JSON type is an error
// naming the field, and numbers are clamped to their documented ranges.

// Server defaults and limits for SessionConfig.
const (
	DefaultPrompt      = "instrumental music"
	DefaultDepth       = 4
	DefaultVAEWindow   = 0.36
	DefaultSteps       = 8
	DefaultWalkWindowS = 60.0

	// MaxPipelineDepth is the largest depth any engine profile allows
	// (max batch 8). ParseSessionConfig clamps to it; the server clamps
	// further to its engine's real maximum with ClampDepth.
	MaxPipelineDepth = 8
	MinVAEWindow     = 0.04
	MaxVAEWindow     = 0.36
	MinSteps         = 1
	MaxSteps         = 16
	// MaxCropSeconds and the walk-window bounds follow the 240 s engine
	// profile limit.
	MaxCropSeconds = 240.0
	MinWalkWindowS = 10.0
	MaxWalkWindowS = 240.0
	// MaxLoRAStrength bounds lora_strengths and enable_lora strengths (the
	// client's lora_str_<id> knob range).
	MaxLoRAStrength = 1.8
)

// Stem source modes (config stem_source_mode, swap_source stem_source_mode).
const (
	StemFull        = "full"
	StemVocals      = "vocals"
	StemInstruments = "instruments"
)

func validStemMode(s string) bool {
	return s == StemFull || s == StemVocals || s == StemInstruments
}

// SessionConfig is the parsed, clamped session configuration.
type SessionConfig struct {
	SDE              bool               `json:"sde"`
	LoRA             bool               `json:"lora"`
	Depth            int                `json:"depth"`      // [1, MaxPipelineDepth]; see ClampDepth
	VAEWindow        float64            `json:"vae_window"` // seconds, [0.04, 0.36]
	Crop             float64            `json:"crop"`       // seconds, 0 = no crop, ≤ 240
	Steps            int                `json:"steps"`      // [1, 16]
	FastVAE          bool               `json:"fast_vae"`
	WalkWindow       bool               `json:"walk_window"`
	WalkWindowS      float64            `json:"walk_window_s"` // [10, 240]
	EnabledLoRAs     []string           `json:"enabled_loras"`
	Prompt           string             `json:"prompt"`
	PromptB          string             `json:"prompt_b"` // defaults to Prompt
	LoRAStrengths    map[string]float64 `json:"lora_strengths"`
	FixtureName      string             `json:"fixture_name,omitempty"` // "" = none
	UseServerFixture bool               `json:"use_server_fixture"`
	// StemSourceMode is "", StemFull, StemVocals or StemInstruments; ""
	// means "auto" (the server decides: full for uploads, none for
	// built-in fixtures).
	StemSourceMode string `json:"stem_source_mode,omitempty"`
	ClientID       string `json:"client_id,omitempty"`
	// LoRAPaths merges the legacy lora_path and lora_paths. These are
	// server-side file paths: a server must only honour them from trusted
	// origins (the browser never sends them).
	LoRAPaths []string `json:"lora_paths,omitempty"`
	// SliceEncoding is demon's extension "slice_encoding": "raw" asks for
	// RAW (flags=0) audio slices so a client needs no zstd; absent or
	// "delta" gives DEMON's zstd DELTA slices. DEMON's client never sends
	// it, so it always gets DELTA.
	SliceEncoding SliceEncoding `json:"slice_encoding"`
	// Key and TimeSignature are declared by DEMON's client type but never
	// sent at start; demon honours them when present ("" = unknown). An
	// unknown time signature is ignored.
	Key           string `json:"key,omitempty"`
	TimeSignature string `json:"time_signature,omitempty"`
}

// DefaultSessionConfig returns the server defaults (what an empty object
// parses to).
func DefaultSessionConfig() SessionConfig {
	return SessionConfig{
		Depth:         DefaultDepth,
		VAEWindow:     DefaultVAEWindow,
		Steps:         DefaultSteps,
		WalkWindowS:   DefaultWalkWindowS,
		EnabledLoRAs:  []string{},
		Prompt:        DefaultPrompt,
		PromptB:       DefaultPrompt,
		LoRAStrengths: map[string]float64{},
		SliceEncoding: EncodingDelta,
	}
}

// ClampDepth limits Depth to [1, maxDepth], the engine's real maximum.
func (c *SessionConfig) ClampDepth(maxDepth int) {
	c.Depth = max(1, min(c.Depth, maxDepth))
}

// FirstMessage tells which socket a WS connection is.
type FirstMessage int

const (
	// FirstSessionConfig: a session socket (any first JSON object whose
	// type is not "upload_track", including one with no type at all).
	FirstSessionConfig FirstMessage = iota
	// FirstUploadTrack: the short-lived upload socket (§4.14).
	FirstUploadTrack
)

func (k FirstMessage) String() string {
	if k == FirstUploadTrack {
		return "upload_track"
	}
	return "session_config"
}

// FirstMessageKind classifies the first text message of a connection. It
// fails only if the message is not a JSON object or its "type" is not a
// string.
func FirstMessageKind(b []byte) (FirstMessage, error) {
	o, err := parseObject("first message", b)
	if err != nil {
		return 0, err
	}
	t, _, err := o.str("type")
	if err != nil {
		return 0, err
	}
	if t == TypeUploadTrack {
		return FirstUploadTrack, nil
	}
	return FirstSessionConfig, nil
}

// ParseSessionConfig parses the first message of a session socket. Missing
// fields take the server defaults; numbers are clamped (depth to
// [1, MaxPipelineDepth], vae_window to [0.04, 0.36], steps to [1, 16], crop
// to [0, 240], walk_window_s to [10, 240], lora strengths to [0, 1.8]);
// integers given as non-integral numbers are truncated toward zero. A field
// of the wrong type, an unknown stem_source_mode or slice_encoding, and a
// message with type "upload_track" (ErrUploadFirstMessage) are errors.
func ParseSessionConfig(b []byte) (SessionConfig, error) {
	const msg = "session config"
	o, err := parseObject(msg, b)
	if err != nil {
		return SessionConfig{}, err
	}
	if t, _, err := o.str("type"); err != nil {
		return SessionConfig{}, err
	} else if t == TypeUploadTrack {
		return SessionConfig{}, fmt.Errorf("ws: %s: %w", msg, ErrUploadFirstMessage)
	}
	c := DefaultSessionConfig()
	var firstErr error
	note := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	setBool := func(key string, dst *bool) {
		v, ok, err := o.boolean(key)
		note(err)
		if ok {
			*dst = v
		}
	}
	setNum := func(key string, dst *float64, lo, hi float64) {
		v, ok, err := o.num(key)
		note(err)
		if ok {
			*dst = clamp(v, lo, hi)
		}
	}
	setInt := func(key string, dst *int, lo, hi int) {
		v, ok, err := o.num(key)
		note(err)
		if ok {
			*dst = toInt(v, lo, hi)
		}
	}
	setStr := func(key string, dst *string) bool {
		v, ok, err := o.str(key)
		note(err)
		if ok {
			*dst = v
		}
		return ok
	}

	setBool("sde", &c.SDE)
	setBool("lora", &c.LoRA)
	setInt("depth", &c.Depth, 1, MaxPipelineDepth)
	setNum("vae_window", &c.VAEWindow, MinVAEWindow, MaxVAEWindow)
	setNum("crop", &c.Crop, 0, MaxCropSeconds)
	setInt("steps", &c.Steps, MinSteps, MaxSteps)
	setBool("fast_vae", &c.FastVAE)
	setBool("walk_window", &c.WalkWindow)
	setNum("walk_window_s", &c.WalkWindowS, MinWalkWindowS, MaxWalkWindowS)
	if v, ok, err := o.strList("enabled_loras"); err != nil {
		note(err)
	} else if ok {
		c.EnabledLoRAs = v
	}
	setStr("prompt", &c.Prompt)
	if !setStr("prompt_b", &c.PromptB) {
		c.PromptB = c.Prompt
	}
	if v, ok, err := o.numMap("lora_strengths"); err != nil {
		note(err)
	} else if ok {
		for k, f := range v {
			if math.IsNaN(f) {
				f = 0
			}
			c.LoRAStrengths[k] = clamp(f, 0, MaxLoRAStrength)
		}
	}
	setStr("fixture_name", &c.FixtureName)
	setBool("use_server_fixture", &c.UseServerFixture)
	if setStr("stem_source_mode", &c.StemSourceMode) && !validStemMode(c.StemSourceMode) {
		note(o.outOfRange("stem_source_mode", fmt.Sprintf("%q is not one of full, vocals, instruments", c.StemSourceMode)))
	}
	setStr("client_id", &c.ClientID)
	var legacy string
	if setStr("lora_path", &legacy) && legacy != "" {
		c.LoRAPaths = append(c.LoRAPaths, legacy)
	}
	if v, ok, err := o.strList("lora_paths"); err != nil {
		note(err)
	} else if ok {
		c.LoRAPaths = append(c.LoRAPaths, v...)
	}
	setStr("key", &c.Key)
	if setStr("time_signature", &c.TimeSignature) && !validTimeSignature(c.TimeSignature) {
		c.TimeSignature = ""
	}
	var enc string
	if setStr("slice_encoding", &enc) {
		e, err := ParseSliceEncoding(enc)
		if err != nil {
			note(o.outOfRange("slice_encoding", err.Error()))
		}
		c.SliceEncoding = e
	}
	if firstErr != nil {
		return SessionConfig{}, firstErr
	}
	return c, nil
}
