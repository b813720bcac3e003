// Package models is demon's model repository: engine files with their JSON metadata
// sidecars, validated before anything is allocated, and the model context that loads every
// component of a profile onto a device and releases it all again, in reverse, on failure
// or unload.
package models

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// SchemaVersion is the sidecar schema this build reads and writes.
const SchemaVersion = 1

// Backends.
const (
	BackendCPURef   = "cpu-ref"
	BackendTensorRT = "tensorrt"
)

// CPURefVersion is the reference backend version this build loads. An engine built by
// another version is refused with the command that rebuilds it.
const CPURefVersion = "cpu-ref-1"

// Component names (spec/engine.md §2; DEMON runs the text encoder and stem separator
// outside TensorRT, demon makes them engines so they are owned and accounted alike).
const (
	Decoder           = "decoder"
	VAEEncode         = "vae_encode"
	VAEDecode         = "vae_decode"
	VAEDecodeWindowed = "vae_decode_windowed"
	TextEncoder       = "text_encoder"
	StemSeparator     = "stem_separator"
)

// Components lists every component in load order. Unload runs in reverse.
var Components = []string{TextEncoder, StemSeparator, VAEEncode, VAEDecode, VAEDecodeWindowed, Decoder}

// Dim is one dimension of a tensor profile: fixed when Min == Opt == Max.
type Dim struct {
	Min int64 `json:"min"`
	Opt int64 `json:"opt"`
	Max int64 `json:"max"`
	// Symbol names a dynamic dimension ("B" batch, "T" latent frames, "L" conditioning
	// tokens, "S" audio samples); dimensions with one symbol take equal values. Empty for a
	// static dimension.
	Symbol string `json:"symbol,omitempty"`
}

// Fixed returns a fixed dimension.
func Fixed(n int64) Dim { return Dim{Min: n, Opt: n, Max: n} }

// Dynamic returns a dimension named sym with the profile min/opt/max.
func Dynamic(sym string, min, opt, max int64) Dim {
	return Dim{Min: min, Opt: opt, Max: max, Symbol: sym}
}

// TensorSpec is one input or output of an engine, with its optimisation profile.
type TensorSpec struct {
	Name  string `json:"name"`
	IO    string `json:"io"`    // "input" or "output"
	DType string `json:"dtype"` // "float32", "bfloat16", "int32"
	Dims  []Dim  `json:"dims"`
}

// Metadata is an engine's JSON sidecar, `<name>.engine.metadata.json`.
type Metadata struct {
	SchemaVersion  int    `json:"schema_version"`
	Component      string `json:"component"`
	Backend        string `json:"backend"`
	BackendVersion string `json:"backend_version"`
	// Variant distinguishes reference decoders ("oracle", "tiny-dit").
	Variant string `json:"variant,omitempty"`
	// GPUComputeCapability is the build GPU's "major.minor" (TensorRT engines only).
	GPUComputeCapability string `json:"gpu_compute_capability,omitempty"`
	// DurationS is the longest source, in seconds, the engine's profile covers.
	DurationS int          `json:"duration_s"`
	Tensors   []TensorSpec `json:"tensors"`
	// DeviceFootprintBytes is what the engine occupies on the device once loaded
	// (weights and reserved memory). Reference engines reserve exactly this much so memory
	// behaviour matches the real engine's.
	DeviceFootprintBytes uint64 `json:"device_footprint_bytes"`
	// ContextFootprintBytes is the activation memory one execution context allocates.
	ContextFootprintBytes uint64 `json:"context_footprint_bytes"`
	EngineBytes           int64  `json:"engine_bytes"`
	EngineSHA256          string `json:"engine_sha256"`
	BuiltAt               string `json:"built_at"`
	Builder               string `json:"builder"`
}

var (
	tensorNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	// symbolRE fits the shim's dm_tensor_desc (DM_DIM_SYMBOL_LEN 8, NUL included).
	symbolRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,6}$`)
)

// ParseMetadata decodes and validates a sidecar. The error names the first problem found.
func ParseMetadata(data []byte) (Metadata, error) {
	var m Metadata
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Metadata{}, fmt.Errorf("%w: metadata is not valid JSON: %v", ErrCorrupt, err)
	}
	if dec.More() {
		return Metadata{}, fmt.Errorf("%w: metadata has trailing data after the JSON object", ErrCorrupt)
	}
	if err := m.validate(); err != nil {
		return Metadata{}, err
	}
	return m, nil
}

func (m Metadata) validate() error {
	if m.SchemaVersion != SchemaVersion {
		return fmt.Errorf("%w: metadata schema_version %d, this build reads %d", ErrMismatch, m.SchemaVersion, SchemaVersion)
	}
	if !slices.Contains(Components, m.Component) {
		return fmt.Errorf("%w: unknown component %q (want one of %s)", ErrCorrupt, m.Component, strings.Join(Components, ", "))
	}
	switch m.Backend {
	case BackendCPURef, BackendTensorRT:
	default:
		return fmt.Errorf("%w: unknown backend %q (want %s or %s)", ErrCorrupt, m.Backend, BackendCPURef, BackendTensorRT)
	}
	if m.BackendVersion == "" {
		return fmt.Errorf("%w: backend_version is empty", ErrCorrupt)
	}
	if m.DurationS <= 0 || m.DurationS > 240 {
		return fmt.Errorf("%w: duration_s %d outside 1..240", ErrCorrupt, m.DurationS)
	}
	if m.DeviceFootprintBytes == 0 {
		return fmt.Errorf("%w: device_footprint_bytes must be > 0", ErrCorrupt)
	}
	if m.EngineBytes <= 0 {
		return fmt.Errorf("%w: engine_bytes must be > 0", ErrCorrupt)
	}
	if b, err := hex.DecodeString(m.EngineSHA256); err != nil || len(b) != 32 {
		return fmt.Errorf("%w: engine_sha256 is not 64 hex digits", ErrCorrupt)
	}
	if len(m.Tensors) == 0 || len(m.Tensors) > 16 {
		return fmt.Errorf("%w: %d tensors (want 1..16)", ErrCorrupt, len(m.Tensors))
	}
	for _, t := range m.Tensors {
		if !tensorNameRE.MatchString(t.Name) {
			return fmt.Errorf("%w: tensor name %q", ErrCorrupt, t.Name)
		}
		if t.IO != "input" && t.IO != "output" {
			return fmt.Errorf("%w: tensor %s: io %q (want input or output)", ErrCorrupt, t.Name, t.IO)
		}
		switch t.DType {
		case "float32", "bfloat16", "float16", "int32":
		default:
			return fmt.Errorf("%w: tensor %s: dtype %q", ErrCorrupt, t.Name, t.DType)
		}
		if len(t.Dims) == 0 || len(t.Dims) > 8 {
			return fmt.Errorf("%w: tensor %s: rank %d (want 1..8)", ErrCorrupt, t.Name, len(t.Dims))
		}
		for i, d := range t.Dims {
			if d.Min < 1 || d.Min > d.Opt || d.Opt > d.Max || d.Max > 1<<32 {
				return fmt.Errorf("%w: tensor %s: dim %d has min/opt/max %d/%d/%d", ErrCorrupt, t.Name, i, d.Min, d.Opt, d.Max)
			}
			if d.Symbol != "" && !symbolRE.MatchString(d.Symbol) {
				return fmt.Errorf("%w: tensor %s: dim %d symbol %q (want a letter, then up to 6 letters, digits or _)", ErrCorrupt, t.Name, i, d.Symbol)
			}
		}
	}
	return nil
}

// Tensor returns the named tensor spec.
func (m Metadata) Tensor(name string) (TensorSpec, bool) {
	for _, t := range m.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorSpec{}, false
}

// Marshal encodes the sidecar as DEMON's _engine_metadata.py does (json.dumps with
// sort_keys=True, indent=2; spec/engine.md §3.4): keys sorted at every level, two-space
// indent, a final newline. encoding/json writes struct fields in declaration order but map
// keys sorted, so the struct goes through a generic value first (numbers kept verbatim).
func (m Metadata) Marshal() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return marshalIndent(v)
}
