package models

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/demon-audio/demon/trt"
)

// Footprints choose how much device memory reference engines declare.
type Footprints int

const (
	// FootprintsRealistic declares the memory DEMON's TensorRT engines use on a GPU for a
	// 60 s profile (spec/engine.md §5, lifecycle.md §1.3), so admission and out-of-memory
	// behave as on a 24 GB card. The host device maps these lazily: they cost no RAM.
	FootprintsRealistic Footprints = iota
	// FootprintsActual declares only what the reference math needs: small and fast, for
	// tests that are not about memory pressure.
	FootprintsActual
)

// footprint is (resident, per-context) bytes for a component.
type footprint struct{ resident, context uint64 }

// realisticFootprints are modelled on DEMON's measured and stated figures: the 2B decoder
// (≈4 GB bf16 weights + reserve, 1–2 GB static context workspace), Oobleck VAE engines
// (encode context ≈3.8 GB for 60 s; the fixed 1 s decode reserves ≈81 MB), the
// Qwen3-Embedding-0.6B text encoder (≈1.2 GB bf16) and a RoFormer-class stem separator.
var realisticFootprints = map[string]footprint{
	Decoder:           {4_300_000_000, 1_600_000_000},
	VAEEncode:         {340_000_000, 3_800_000_000},
	VAEDecode:         {340_000_000, 1_580_000_000},
	VAEDecodeWindowed: {340_000_000, 81_000_000},
	TextEncoder:       {1_200_000_000, 50_000_000},
	StemSeparator:     {450_000_000, 900_000_000},
}

// BuildOptions configure BuildReference.
type BuildOptions struct {
	// Profiles to build; default one "ref-60s" profile (tiny DiT, 60 s).
	Profiles []ProfileSpec
	// Footprints: realistic (default) or actual.
	Footprints Footprints
	// Seed for reference weights and embeddings.
	Seed uint64
	// Now stamps built_at (tests fix it); zero means time.Now.
	Now time.Time
}

// ProfileSpec describes one profile of a reference repository.
type ProfileSpec struct {
	Name      string
	DurationS int
	// DecoderVariant is "tiny-dit" (realistic compute) or "oracle" (exact, cheap).
	DecoderVariant string
	// DecoderPrecision is the decoder's I/O layout: "fp32" (default when empty) or "mixed",
	// DEMON's 2B layout (bfloat16 hidden_states, encoder_hidden_states, context_latents and
	// velocity, float32 timestep; spec/engine.md §2.2). Its name says which, as DEMON's do.
	DecoderPrecision string
}

// decoderPrecision is the spec's precision with the default filled in.
func (ps ProfileSpec) decoderPrecision() string {
	if ps.DecoderPrecision == "" {
		return "fp32"
	}
	return ps.DecoderPrecision
}

// DefaultProfile is the profile demond serves when none is configured.
var DefaultProfile = ProfileSpec{Name: "ref-60s", DurationS: 60, DecoderVariant: "tiny-dit"}

// BuildReference writes a reference model repository at dir: one folder per engine with
// the engine file and its metadata sidecar, and the manifest. Existing files are replaced.
func BuildReference(dir string, opts BuildOptions) (*Repository, error) {
	if len(opts.Profiles) == 0 {
		opts.Profiles = []ProfileSpec{DefaultProfile}
	}
	if opts.Seed == 0 {
		opts.Seed = 20260531
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now().UTC()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("build reference repository: %w", err)
	}
	man := Manifest{SchemaVersion: SchemaVersion}
	built := map[string]bool{}
	for _, ps := range opts.Profiles {
		p := Profile{Name: ps.Name, DurationS: ps.DurationS, Engines: map[string]string{}}
		for _, c := range Components {
			name := referenceName(c, ps)
			p.Engines[c] = name
			if built[name] {
				continue
			}
			if err := writeReference(dir, name, c, ps, opts, now); err != nil {
				return nil, err
			}
			built[name] = true
		}
		man.Profiles = append(man.Profiles, p)
	}
	data, err := marshalIndent(man)
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, ManifestFile), data); err != nil {
		return nil, err
	}
	return Open(dir)
}

func referenceName(component string, ps ProfileSpec) string {
	switch component {
	case Decoder:
		return fmt.Sprintf("decoder_%s_%s_b8_%ds", ps.DecoderVariant, ps.decoderPrecision(), ps.DurationS)
	case VAEDecodeWindowed:
		return "vae_decode_ref_1s_fixed"
	case TextEncoder, StemSeparator:
		return component + "_ref"
	default:
		return fmt.Sprintf("%s_ref_%ds", component, ps.DurationS)
	}
}

func writeReference(dir, name, component string, ps ProfileSpec, opts BuildOptions, now time.Time) error {
	if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
		return err
	}
	enginePath := filepath.Join(dir, name, name+".engine")
	duration := ps.DurationS
	if component == TextEncoder || component == StemSeparator || component == VAEDecodeWindowed {
		duration = 240 // duration-agnostic engines cover every profile
	}
	variant, precision := "", "fp32"
	if component == Decoder {
		variant, precision = ps.DecoderVariant, ps.decoderPrecision()
	}
	ro := trt.ReferenceOptions{Component: component, Variant: variant, Seed: opts.Seed, DurationS: duration, IOPrecision: precision}
	if err := trt.WriteReferenceEngine(ro, enginePath); err != nil {
		return fmt.Errorf("build %s: %w", name, err)
	}
	size, sum, err := hashFile(enginePath)
	if err != nil {
		return err
	}
	fp := footprint{resident: 1}
	if opts.Footprints == FootprintsRealistic {
		fp = realisticFootprints[component]
	}
	meta := Metadata{
		SchemaVersion:         SchemaVersion,
		Component:             component,
		Backend:               BackendCPURef,
		BackendVersion:        CPURefVersion,
		Variant:               variant,
		DurationS:             duration,
		Tensors:               referenceTensors(component, duration, precision),
		DeviceFootprintBytes:  fp.resident,
		ContextFootprintBytes: fp.context,
		EngineBytes:           size,
		EngineSHA256:          sum,
		BuiltAt:               now.Format(time.RFC3339),
		Builder:               "demond models build-reference (demon " + trt.Version() + ")",
	}
	data, err := meta.Marshal()
	if err != nil {
		return err
	}
	return writeFileAtomic(enginePath+".metadata.json", data)
}

// referenceTensors is the sidecar's tensor list; Resolve cross-checks it against the table
// the engine file declares.
func referenceTensors(component string, durationS int, decoderPrecision string) []TensorSpec {
	tmax := int64(durationS) * FrameRate
	topt := min(tmax, 1500)
	b := Dynamic("B", 1, 1, 8)
	t := Dynamic("T", 126, topt, tmax)
	l := Dynamic("L", 32, 200, 512)
	audioSpan := Dynamic("S", 240000, topt*Hop, tmax*Hop)
	f32 := "float32"
	switch component {
	case Decoder:
		io := f32
		if decoderPrecision == "mixed" {
			io = "bfloat16"
		}
		return []TensorSpec{
			{"hidden_states", "input", io, []Dim{b, t, Fixed(64)}},
			{"timestep", "input", f32, []Dim{b}},
			{"encoder_hidden_states", "input", io, []Dim{b, l, Fixed(2048)}},
			{"context_latents", "input", io, []Dim{b, t, Fixed(128)}},
			{"velocity", "output", io, []Dim{b, t, Fixed(64)}},
		}
	case VAEEncode:
		return []TensorSpec{
			{"audio", "input", f32, []Dim{Fixed(1), Fixed(2), audioSpan}},
			{"moments", "output", f32, []Dim{Fixed(1), Fixed(128), Dynamic("T", 125, topt, tmax)}},
		}
	case VAEDecode:
		return []TensorSpec{
			{"latents", "input", f32, []Dim{Fixed(1), Fixed(64), Dynamic("T", 125, topt, tmax)}},
			{"audio", "output", f32, []Dim{Fixed(1), Fixed(2), audioSpan}},
		}
	case VAEDecodeWindowed:
		return []TensorSpec{
			{"latents", "input", f32, []Dim{Fixed(1), Fixed(64), Fixed(25)}},
			{"audio", "output", f32, []Dim{Fixed(1), Fixed(2), Fixed(48000)}},
		}
	case TextEncoder:
		return []TensorSpec{
			{"token_ids", "input", "int32", []Dim{Fixed(1), l}},
			{"encoder_hidden_states", "output", f32, []Dim{Fixed(1), l, Fixed(2048)}},
		}
	case StemSeparator:
		span := Dynamic("S", 240000, min(int64(durationS), 60)*SampleRate, int64(durationS)*SampleRate)
		return []TensorSpec{
			{"audio", "input", f32, []Dim{Fixed(1), Fixed(2), span}},
			{"vocals", "output", f32, []Dim{Fixed(1), Fixed(2), span}},
			{"instruments", "output", f32, []Dim{Fixed(1), Fixed(2), span}},
		}
	}
	return nil
}

func hashFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}
