package ws

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Server → client JSON messages (protocol.md §3.3, §4.4, §4.5, §4.14) plus
// demon's not_supported event. Each message is a struct; EncodeServerMessage
// marshals it with "type" as the first key. Nullable wire fields are
// pointers without omitempty (they are sent as null, like the reference);
// list fields are never sent as null.

// Server message types.
const (
	TypeReady            = "ready"
	TypeError            = "error"
	TypeParamsUpdate     = "params_update"
	TypeParamsEcho       = "params_echo"
	TypePromptBlendEcho  = "prompt_blend_echo"
	TypePromptApplied    = "prompt_applied"
	TypeLoRACatalog      = "lora_catalog"
	TypeDepthApplied     = "depth_applied"
	TypeSwapReady        = "swap_ready"
	TypeSwapFailed       = "swap_failed"
	TypeStemAssets       = "stem_assets"
	TypeStemFailed       = "stem_failed"
	TypeTimbreSet        = "timbre_set"
	TypeTimbreCleared    = "timbre_cleared"
	TypeTimbreFailed     = "timbre_failed"
	TypeStructureSet     = "structure_set"
	TypeStructureCleared = "structure_cleared"
	TypeStructureFailed  = "structure_failed"
	TypeUploadOK         = "upload_ok"
	TypeUploadFailed     = "upload_failed"
	// TypeNotSupported is demon's event for a request it does not
	// implement (DEMON's client ignores unknown types).
	TypeNotSupported = "not_supported"
)

// Error codes for the start-up error message (§4.5, §5.1). demon adds
// its own codes for failures the reference reports with a bare close.
const (
	CodeUnsupportedCheckpoint = "unsupported_trt_checkpoint"
	CodeEngineNotBuilt        = "engine_not_built"
	CodeStemExtractFailed     = "stem_extract_failed"
	CodeBadConfig             = "bad_config"  // demon: invalid session config
	CodeBadSource             = "bad_source"  // demon: invalid/short PCM or unknown fixture
	CodeInternal              = "internal"    // demon: any other start-up failure
	CodeServerBusy            = "server_busy" // demon: admission refused
	// CodeSessionStartFailed: demon: the session failed while starting
	// (create, the handshake, runner construction); Error.Window names the
	// failure window (session.ErrorWindow).
	CodeSessionStartFailed = "session_start_failed"
	// CodePipelineError: demon: generation failed after ready.
	CodePipelineError = "pipeline_error"
	// CodeServerShutdown: demon: the server is draining or restarting.
	CodeServerShutdown = "server_shutdown"
	// CodeBadMessage: demon: a malformed client message during streaming
	// (non-fatal; the session continues).
	CodeBadMessage = "bad_message"
	// CodeNoBackend: demon: the server runs without a generative backend.
	CodeNoBackend = "no_backend"
)

// ServerMessage is implemented by every server message struct.
type ServerMessage interface {
	// MessageType returns the wire "type".
	MessageType() string
}

// EncodeServerMessage marshals m as a JSON object whose first key is
// "type". It fails only for values JSON cannot represent (NaN, ±Inf).
func EncodeServerMessage(m ServerMessage) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("ws: encode %s: %w", m.MessageType(), err)
	}
	typ, _ := json.Marshal(m.MessageType())
	var b bytes.Buffer
	b.Grow(len(body) + len(typ) + 10)
	b.WriteString(`{"type":`)
	b.Write(typ)
	if len(body) > 2 { // body is "{...}"
		b.WriteByte(',')
		b.Write(body[1:])
	} else {
		b.WriteByte('}')
	}
	return b.Bytes(), nil
}

// Strings is a string list that encodes nil as [].
type Strings []string

// MarshalJSON encodes nil as an empty array.
func (s Strings) MarshalJSON() ([]byte, error) {
	if s == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]string(s))
}

// LoRACatalogEntries is a catalog list that encodes nil as [].
type LoRACatalogEntries []LoRACatalogEntry

// MarshalJSON encodes nil as an empty array.
func (s LoRACatalogEntries) MarshalJSON() ([]byte, error) {
	if s == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]LoRACatalogEntry(s))
}

// LoRA catalog entry states.
const (
	LoRARegistered   = "registered"
	LoRAMaterialized = "materialized"
	LoRAEnabled      = "enabled"
)

// LoRACatalogEntry is one LoRA in ready.lora_catalog, lora_catalog and
// /api/loras.
type LoRACatalogEntry struct {
	ID                string       `json:"id"`
	Name              string       `json:"name"`
	Path              string       `json:"path"`
	State             string       `json:"state"`
	Strength          float64      `json:"strength"`
	MaterializedBytes int64        `json:"materialized_bytes"`
	Metadata          LoRAMetadata `json:"metadata"`
}

// LoRAMetadata is the metadata block of a catalog entry; nullable fields
// are null when unknown.
type LoRAMetadata struct {
	ID                  string   `json:"id"`
	Name                string   `json:"name"`
	Description         *string  `json:"description"`
	PrimaryTriggerWord  *string  `json:"primary_trigger_word"`
	TriggerWords        Strings  `json:"trigger_words"`
	RecommendedStrength *float64 `json:"recommended_strength"`
	RecommendedSteps    *int     `json:"recommended_steps"`
	RecommendedShift    *float64 `json:"recommended_shift"`
	RecommendedGuidance *float64 `json:"recommended_guidance"`
	PrimaryGenre        *string  `json:"primary_genre"`
	SecondaryGenres     Strings  `json:"secondary_genres"`
	Tags                Strings  `json:"tags"`
	Moods               Strings  `json:"moods"`
	BaseModel           *string  `json:"base_model"`
	BaseModelScale      *string  `json:"base_model_scale"`
	HasMetadata         bool     `json:"has_metadata"`
}

// Ready is the first server message of a session (§3.3). Channels and
// Duration are required by the client; SampleRate must be 48000.
type Ready struct {
	Channels          int                `json:"channels"`
	Duration          float64            `json:"duration"`
	SampleRate        int                `json:"sample_rate"`
	LoRACatalog       LoRACatalogEntries `json:"lora_catalog"`
	LoRADir           string             `json:"lora_dir"`
	LoRAPendingEnable Strings            `json:"lora_pending_enable"`
	BPM               *int               `json:"bpm"`
	Key               *string            `json:"key"`
	TimeSignature     *string            `json:"time_signature"`
	Checkpoint        string             `json:"checkpoint"`
	CheckpointScale   *string            `json:"checkpoint_scale"`
	PipelineDepth     int                `json:"pipeline_depth"`
	MaxPipelineDepth  *int               `json:"max_pipeline_depth"`
	SessionID         string             `json:"session_id"`
}

// Error is the start-up failure message; always follow it with close 1011.
type Error struct {
	Code         string   `json:"code"`
	Message      string   `json:"message"`
	BuildCommand string   `json:"build_command,omitempty"`
	DurationS    *float64 `json:"duration_s,omitempty"`
	// Window is demon's failure window for session_start_failed (the fault
	// point or create stage, see session.ErrorWindow).
	Window string `json:"window,omitempty"`
}

// ParamsUpdate is the per-slice telemetry (§4.4). Policy: Coalesce.
type ParamsUpdate struct {
	Params map[string]any `json:"params"`
}

// ParamsEcho echoes control-bus knob changes to the browser. Coalesce.
type ParamsEcho struct {
	Raw Knobs `json:"raw"`
}

// PromptBlendEcho echoes a control-bus blend change. Coalesce.
type PromptBlendEcho struct {
	Value float64 `json:"value"`
}

// PromptApplied acks a prompt; echo the tags received.
type PromptApplied struct {
	Tags string `json:"tags"`
}

// LoRACatalog is sent after each drain of LoRA enables/disables.
type LoRACatalog struct {
	Catalog LoRACatalogEntries `json:"catalog"`
}

// DepthApplied acks set_depth with the clamped depth.
type DepthApplied struct {
	Value int `json:"value"`
}

// SwapReady announces a swap; exactly one F16 buffer must follow
// (use the same Group, see SwapGroup).
type SwapReady struct {
	Duration      float64 `json:"duration"`
	SampleRate    int     `json:"sample_rate"`
	Channels      int     `json:"channels"`
	BPM           *int    `json:"bpm"`
	Key           *string `json:"key"`
	TimeSignature *string `json:"time_signature"`
	FixtureName   *string `json:"fixture_name"`
}

// SwapFailed rejects a swap.
type SwapFailed struct {
	Error        string `json:"error"`
	BuildCommand string `json:"build_command,omitempty"`
}

// StemAssets announces stems; one F16 buffer per entry of Stems follows,
// in order. Always list both "vocals" and "instruments".
type StemAssets struct {
	FixtureName string  `json:"fixture_name"`
	SampleRate  int     `json:"sample_rate"`
	Channels    int     `json:"channels"`
	Frames      int     `json:"frames"`
	Stems       Strings `json:"stems"`
	SourceMode  string  `json:"source_mode"`
}

// StemFailed reports a failed stem extraction; no binaries follow.
type StemFailed struct {
	FixtureName string `json:"fixture_name"`
	Error       string `json:"error"`
}

// TimbreSet acks a timbre reference (Duration in seconds, after the cap).
type TimbreSet struct {
	Name     string  `json:"name"`
	Duration float64 `json:"duration"`
}

// TimbreCleared acks clear_timbre_source.
type TimbreCleared struct{}

// TimbreFailed reports a failed timbre reference.
type TimbreFailed struct {
	Error string `json:"error"`
}

// StructureSet acks a structure reference (Duration before pad/trim).
type StructureSet struct {
	Name     string  `json:"name"`
	Duration float64 `json:"duration"`
}

// StructureCleared acks clear_structure_source.
type StructureCleared struct{}

// StructureFailed reports a failed structure reference.
type StructureFailed struct {
	Error string `json:"error"`
}

// UploadOK ends a successful upload socket.
type UploadOK struct {
	Name          string  `json:"name"`
	BPM           int     `json:"bpm"`
	Key           string  `json:"key"`
	TimeSignature string  `json:"time_signature"`
	DurationS     float64 `json:"duration_s"`
	Samples       int     `json:"samples"`
}

// UploadFailed ends a failed upload socket.
type UploadFailed struct {
	Error string `json:"error"`
}

// NotSupported answers a request demon does not implement:
// {"type":"not_supported","request":"<client type>","message":"…"}.
// It never closes the session. Policy: NeverDrop.
type NotSupported struct {
	Request string `json:"request"`
	Message string `json:"message"`
	// Knobs names the params knobs demon ignores (request "params" only).
	Knobs Strings `json:"knobs,omitempty"`
}

func (Ready) MessageType() string            { return TypeReady }
func (Error) MessageType() string            { return TypeError }
func (ParamsUpdate) MessageType() string     { return TypeParamsUpdate }
func (ParamsEcho) MessageType() string       { return TypeParamsEcho }
func (PromptBlendEcho) MessageType() string  { return TypePromptBlendEcho }
func (PromptApplied) MessageType() string    { return TypePromptApplied }
func (LoRACatalog) MessageType() string      { return TypeLoRACatalog }
func (DepthApplied) MessageType() string     { return TypeDepthApplied }
func (SwapReady) MessageType() string        { return TypeSwapReady }
func (SwapFailed) MessageType() string       { return TypeSwapFailed }
func (StemAssets) MessageType() string       { return TypeStemAssets }
func (StemFailed) MessageType() string       { return TypeStemFailed }
func (TimbreSet) MessageType() string        { return TypeTimbreSet }
func (TimbreCleared) MessageType() string    { return TypeTimbreCleared }
func (TimbreFailed) MessageType() string     { return TypeTimbreFailed }
func (StructureSet) MessageType() string     { return TypeStructureSet }
func (StructureCleared) MessageType() string { return TypeStructureCleared }
func (StructureFailed) MessageType() string  { return TypeStructureFailed }
func (UploadOK) MessageType() string         { return TypeUploadOK }
func (UploadFailed) MessageType() string     { return TypeUploadFailed }
func (NotSupported) MessageType() string     { return TypeNotSupported }

// PolicyFor returns the queue policy for a server message type
// (lifecycle.md §6.2): params_update, params_echo and prompt_blend_echo
// coalesce; every other JSON event is NeverDrop. Audio slices are
// DropOldest (see AudioGroup).
func PolicyFor(messageType string) Policy {
	switch messageType {
	case TypeParamsUpdate, TypeParamsEcho, TypePromptBlendEcho:
		return Coalesce
	}
	return NeverDrop
}

// NotSupportedFor builds the reply to a request demon does not implement.
func NotSupportedFor(request string) NotSupported {
	return NotSupported{Request: request, Message: fmt.Sprintf("demon does not support %q", request)}
}
