package ws

import (
	"fmt"
	"math"
)

// Client → server JSON messages during streaming (protocol.md §4.6) and the
// upload header (§4.14).

// Client message types.
const (
	TypeParams               = "params"
	TypePrompt               = "prompt"
	TypeSetPromptBlend       = "set_prompt_blend"
	TypeSetTimbreStrength    = "set_timbre_strength"
	TypeSetDepth             = "set_depth"
	TypeLoopBand             = "loop_band"
	TypeEnableLoRA           = "enable_lora"
	TypeDisableLoRA          = "disable_lora"
	TypeSetTimbreSource      = "set_timbre_source"
	TypeSetTimbreFixture     = "set_timbre_fixture"
	TypeClearTimbreSource    = "clear_timbre_source"
	TypeSetStructureSource   = "set_structure_source"
	TypeSetStructureFixture  = "set_structure_fixture"
	TypeClearStructureSource = "clear_structure_source"
	TypeSwapSource           = "swap_source"
	TypeUploadTrack          = "upload_track"
)

// Message is a decoded client message. Use a type switch on the concrete
// pointer types (*Params, *Prompt, …).
type Message interface {
	// Type returns the wire "type".
	Type() string
	// ExpectsPCM reports whether the next WS message of the connection,
	// whatever its kind, is this message's binary PCM frame (§4.6
	// "binary follow-up rule"): set_timbre_source, set_structure_source,
	// swap_source without use_server_source, and upload_track.
	ExpectsPCM() bool
}

type noPCM struct{}

func (noPCM) ExpectsPCM() bool { return false }

type withPCM struct{}

func (withPCM) ExpectsPCM() bool { return true }

// Params is the knob heartbeat, sent every 8 ms. No ack.
type Params struct {
	noPCM
	Raw Knobs
	// PlaybackPos is the client playhead in seconds within the loop; valid
	// when HasPlaybackPos. Negative values are clamped to 0; the server
	// takes it modulo the buffer length.
	PlaybackPos    float64
	HasPlaybackPos bool
}

// Prompt re-encodes the prompts; ack PromptApplied{Tags}.
type Prompt struct {
	noPCM
	Tags          string
	TagsB         *string // nil: keep prompt B in step with A (server policy)
	Key           *string // e.g. "G# minor"
	TimeSignature *string // "2", "3", "4" or "6"
}

// SetPromptBlend moves the A↔B blend; Value clamped to [0, 1]. No ack.
type SetPromptBlend struct {
	noPCM
	Value float64
}

// SetTimbreStrength sets the timbre reference strength; Value clamped to
// [0, 1]. No ack.
type SetTimbreStrength struct {
	noPCM
	Value float64
}

// SetDepth changes the pipeline depth; Value is rounded and clamped to
// [1, MaxPipelineDepth] (the server clamps to its engine's max). Ack
// DepthApplied.
type SetDepth struct {
	noPCM
	Value int
}

// LoopBand arms (both set, End > Start) or clears the loop band. Values
// are seconds, clamped to ≥ 0. No ack.
type LoopBand struct {
	noPCM
	StartSec, EndSec *float64
}

// Armed reports whether the band is armed.
func (l *LoopBand) Armed() bool {
	return l.StartSec != nil && l.EndSec != nil && *l.EndSec > *l.StartSec
}

// EnableLoRA queues a LoRA enable; ack LoRACatalog.
type EnableLoRA struct {
	noPCM
	ID       string
	Strength *float64 // clamped to [0, MaxLoRAStrength]
}

// DisableLoRA queues a LoRA disable; ack LoRACatalog.
type DisableLoRA struct {
	noPCM
	ID string
}

// SetTimbreSource is followed by a PCM frame; ack TimbreSet/TimbreFailed.
type SetTimbreSource struct {
	withPCM
	Name string
}

// SetTimbreFixture selects a built-in fixture as timbre reference.
type SetTimbreFixture struct {
	noPCM
	Name string
}

// ClearTimbreSource clears the timbre reference; ack TimbreCleared.
type ClearTimbreSource struct{ noPCM }

// SetStructureSource is followed by a PCM frame; ack StructureSet/StructureFailed.
type SetStructureSource struct {
	withPCM
	Name string
}

// SetStructureFixture selects a built-in fixture as structure reference.
type SetStructureFixture struct {
	noPCM
	Name string
}

// ClearStructureSource clears the structure reference; ack StructureCleared.
type ClearStructureSource struct{ noPCM }

// SwapSource replaces the playback source. By name (UseServerSource, with
// FixtureName required) or by PCM (the next message is the PCM frame).
// Always answer SwapReady + buffer or SwapFailed: the client has no timeout.
type SwapSource struct {
	UseServerSource bool
	FixtureName     *string
	Tags            *string
	Key             *string
	TimeSignature   *string
	StemSourceMode  *string // "full", "vocals" or "instruments"
}

// ExpectsPCM reports whether a PCM frame follows (the non-by-name variant).
func (m *SwapSource) ExpectsPCM() bool { return !m.UseServerSource }

// UploadTrack is the first message of an upload socket; a PCM frame
// follows. Ack UploadOK/UploadFailed, then close.
type UploadTrack struct {
	withPCM
	Name          string
	Key           *string
	TimeSignature *string
}

func (*Params) Type() string               { return TypeParams }
func (*Prompt) Type() string               { return TypePrompt }
func (*SetPromptBlend) Type() string       { return TypeSetPromptBlend }
func (*SetTimbreStrength) Type() string    { return TypeSetTimbreStrength }
func (*SetDepth) Type() string             { return TypeSetDepth }
func (*LoopBand) Type() string             { return TypeLoopBand }
func (*EnableLoRA) Type() string           { return TypeEnableLoRA }
func (*DisableLoRA) Type() string          { return TypeDisableLoRA }
func (*SetTimbreSource) Type() string      { return TypeSetTimbreSource }
func (*SetTimbreFixture) Type() string     { return TypeSetTimbreFixture }
func (*ClearTimbreSource) Type() string    { return TypeClearTimbreSource }
func (*SetStructureSource) Type() string   { return TypeSetStructureSource }
func (*SetStructureFixture) Type() string  { return TypeSetStructureFixture }
func (*ClearStructureSource) Type() string { return TypeClearStructureSource }
func (*SwapSource) Type() string           { return TypeSwapSource }
func (*UploadTrack) Type() string          { return TypeUploadTrack }

// MessageTypeOf extracts the "type" of a JSON message without decoding the
// rest ("" if absent). It fails only on malformed JSON or a non-string type.
func MessageTypeOf(b []byte) (string, error) {
	o, err := parseObject("message", b)
	if err != nil {
		return "", err
	}
	t, _, err := o.str("type")
	return t, err
}

// PCMFollows reports whether the JSON text message b takes the next WS
// message as its PCM frame (§4.6 binary follow-up rule), judged from its
// type alone so that it answers for a message that fails to decode too:
// set_timbre_source, set_structure_source, upload_track, and swap_source
// unless use_server_source is true. For a message that decodes it agrees
// with Message.ExpectsPCM.
func PCMFollows(b []byte) bool {
	o, err := parseObject("message", b)
	if err != nil {
		return false
	}
	t, _, err := o.str("type")
	if err != nil {
		return false
	}
	switch t {
	case TypeSetTimbreSource, TypeSetStructureSource, TypeUploadTrack:
		return true
	case TypeSwapSource:
		byName, _, err := o.boolean("use_server_source")
		return err != nil || !byName
	}
	return false
}

// DecodeClientMessage decodes one client JSON text message. Errors wrap
// ErrMalformed (not a JSON object), ErrMissingField, ErrWrongType,
// ErrOutOfRange, or ErrUnknownType (as *UnknownTypeError, carrying the type
// for a NotSupported reply). Numeric values with a documented range are
// clamped rather than refused; enumerations (time_signature,
// stem_source_mode) are refused when unknown.
func DecodeClientMessage(b []byte) (Message, error) {
	o, err := parseObject("message", b)
	if err != nil {
		return nil, err
	}
	t, ok, err := o.str("type")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, o.missing("type")
	}
	o.msg = t
	switch t {
	case TypeParams:
		return decodeParams(o)
	case TypePrompt:
		return decodePrompt(o)
	case TypeSetPromptBlend:
		v, err := o.reqNum("value")
		return ret(&SetPromptBlend{Value: clamp(v, 0, 1)}, err)
	case TypeSetTimbreStrength:
		v, err := o.reqNum("value")
		return ret(&SetTimbreStrength{Value: clamp(v, 0, 1)}, err)
	case TypeSetDepth:
		v, err := o.reqNum("value")
		if err != nil {
			return nil, err
		}
		return &SetDepth{Value: toInt(math.Round(v), 1, MaxPipelineDepth)}, nil
	case TypeLoopBand:
		m := &LoopBand{}
		for _, f := range []struct {
			key string
			dst **float64
		}{{"start_sec", &m.StartSec}, {"end_sec", &m.EndSec}} {
			key, dst := f.key, f.dst
			v, ok, err := o.num(key)
			if err != nil {
				return nil, err
			}
			if ok {
				v = max(0, v)
				*dst = &v
			}
		}
		return m, nil
	case TypeEnableLoRA:
		id, err := o.reqStr("id", true)
		if err != nil {
			return nil, err
		}
		m := &EnableLoRA{ID: id}
		if v, ok, err := o.num("strength"); err != nil {
			return nil, err
		} else if ok {
			v = clamp(v, 0, MaxLoRAStrength)
			m.Strength = &v
		}
		return m, nil
	case TypeDisableLoRA:
		id, err := o.reqStr("id", true)
		return ret(&DisableLoRA{ID: id}, err)
	case TypeSetTimbreSource:
		n, err := o.reqStr("name", false)
		return ret(&SetTimbreSource{Name: n}, err)
	case TypeSetTimbreFixture:
		n, err := o.reqStr("name", true)
		return ret(&SetTimbreFixture{Name: n}, err)
	case TypeClearTimbreSource:
		return &ClearTimbreSource{}, nil
	case TypeSetStructureSource:
		n, err := o.reqStr("name", false)
		return ret(&SetStructureSource{Name: n}, err)
	case TypeSetStructureFixture:
		n, err := o.reqStr("name", true)
		return ret(&SetStructureFixture{Name: n}, err)
	case TypeClearStructureSource:
		return &ClearStructureSource{}, nil
	case TypeSwapSource:
		return decodeSwap(o)
	case TypeUploadTrack:
		return DecodeUploadTrack(b)
	}
	return nil, &UnknownTypeError{Type: t}
}

// ret returns (nil, err) on error so callers never see a half-built Message.
func ret[T Message](m T, err error) (Message, error) {
	if err != nil {
		return nil, err
	}
	return m, nil
}

func decodeParams(o object) (Message, error) {
	r, ok := o.raw("raw")
	if !ok {
		return nil, o.missing("raw")
	}
	k, err := parseKnobs(r)
	if err != nil {
		return nil, o.wrong("raw", "object", r)
	}
	m := &Params{Raw: k}
	if v, ok, err := o.num("playback_pos"); err != nil {
		return nil, err
	} else if ok {
		m.PlaybackPos, m.HasPlaybackPos = max(0, v), true
	}
	return m, nil
}

func validTimeSignature(s string) bool { return s == "2" || s == "3" || s == "4" || s == "6" }

func optTimeSignature(o object) (*string, error) {
	ts, err := o.optStr("time_signature")
	if err == nil && ts != nil && !validTimeSignature(*ts) {
		err = o.outOfRange("time_signature", fmt.Sprintf("%q is not one of 2, 3, 4, 6", *ts))
	}
	return ts, err
}

func decodePrompt(o object) (Message, error) {
	tags, err := o.reqStr("tags", false)
	if err != nil {
		return nil, err
	}
	m := &Prompt{Tags: tags}
	if m.TagsB, err = o.optStr("tags_b"); err != nil {
		return nil, err
	}
	if m.Key, err = o.optStr("key"); err != nil {
		return nil, err
	}
	if m.TimeSignature, err = optTimeSignature(o); err != nil {
		return nil, err
	}
	return m, nil
}

func decodeSwap(o object) (Message, error) {
	m := &SwapSource{}
	var err error
	if m.UseServerSource, _, err = o.boolean("use_server_source"); err != nil {
		return nil, err
	}
	if m.FixtureName, err = o.optStr("fixture_name"); err != nil {
		return nil, err
	}
	if m.UseServerSource && (m.FixtureName == nil || *m.FixtureName == "") {
		if m.FixtureName == nil {
			return nil, o.missing("fixture_name")
		}
		return nil, o.outOfRange("fixture_name", "must not be empty with use_server_source")
	}
	if m.Tags, err = o.optStr("tags"); err != nil {
		return nil, err
	}
	if m.Key, err = o.optStr("key"); err != nil {
		return nil, err
	}
	if m.TimeSignature, err = optTimeSignature(o); err != nil {
		return nil, err
	}
	if m.StemSourceMode, err = o.optStr("stem_source_mode"); err != nil {
		return nil, err
	}
	if m.StemSourceMode != nil && !validStemMode(*m.StemSourceMode) {
		return nil, o.outOfRange("stem_source_mode", fmt.Sprintf("%q is not one of full, vocals, instruments", *m.StemSourceMode))
	}
	return m, nil
}

// DecodeUploadTrack decodes the first message of an upload socket.
func DecodeUploadTrack(b []byte) (*UploadTrack, error) {
	o, err := parseObject(TypeUploadTrack, b)
	if err != nil {
		return nil, err
	}
	if t, _, err := o.str("type"); err != nil {
		return nil, err
	} else if t != TypeUploadTrack {
		return nil, o.outOfRange("type", fmt.Sprintf("want %q, got %q", TypeUploadTrack, t))
	}
	name, err := o.reqStr("name", true)
	if err != nil {
		return nil, err
	}
	m := &UploadTrack{Name: name}
	if m.Key, err = o.optStr("key"); err != nil {
		return nil, err
	}
	if m.TimeSignature, err = optTimeSignature(o); err != nil {
		return nil, err
	}
	return m, nil
}
