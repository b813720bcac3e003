package models

import (
	"fmt"
	"slices"
)

// Frames per second of latents and samples per frame (spec/engine.md §1).
const (
	FrameRate  = 25
	Hop        = 1920
	SampleRate = 48000
)

// dimRule says what a dimension of a component's tensor must look like.
type dimRule struct {
	fixed int64 // > 0: must be exactly this
	// for dynamic dims: the profile must at least cover [needMin, needMax(duration)], and
	// the dimension is named symbol (dims with one symbol take equal values)
	needMin int64
	needMax func(durationS int) int64
	symbol  string
}

type tensorRule struct {
	name   string
	io     string
	dtypes []string
	dims   []dimRule
}

func fixed(n int64) dimRule { return dimRule{fixed: n} }

func frames(min int64) dimRule {
	return dimRule{needMin: min, needMax: func(d int) int64 { return int64(d) * FrameRate }, symbol: "T"}
}

func samples(min int64) dimRule {
	return dimRule{needMin: min, needMax: func(d int) int64 { return int64(d) * SampleRate }, symbol: "S"}
}

var (
	batch   = dimRule{needMin: 1, needMax: func(int) int64 { return 1 }, symbol: "B"}
	condLen = dimRule{needMin: 32, needMax: func(int) int64 { return 512 }, symbol: "L"}
	floats  = []string{"float32", "bfloat16"}
)

// contracts are the tensor contracts of DEMON's engines (spec/engine.md §2.2–2.5), which
// every backend keeps identical. Batch max and frame mins are checked against what demon
// needs, not DEMON's exact build values.
var contracts = map[string][]tensorRule{
	Decoder: {
		{"hidden_states", "input", floats, []dimRule{batch, frames(126), fixed(64)}},
		{"timestep", "input", []string{"float32", "bfloat16"}, []dimRule{batch}},
		{"encoder_hidden_states", "input", floats, []dimRule{batch, condLen, fixed(2048)}},
		{"context_latents", "input", floats, []dimRule{batch, frames(126), fixed(128)}},
		{"velocity", "output", floats, []dimRule{batch, frames(126), fixed(64)}},
	},
	VAEEncode: {
		{"audio", "input", []string{"float32"}, []dimRule{fixed(1), fixed(2), samples(240000)}},
		{"moments", "output", []string{"float32"}, []dimRule{fixed(1), fixed(128), frames(125)}},
	},
	VAEDecode: {
		{"latents", "input", []string{"float32"}, []dimRule{fixed(1), fixed(64), frames(125)}},
		{"audio", "output", []string{"float32"}, []dimRule{fixed(1), fixed(2), samples(240000)}},
	},
	VAEDecodeWindowed: {
		{"latents", "input", []string{"float32"}, []dimRule{fixed(1), fixed(64), fixed(25)}},
		{"audio", "output", []string{"float32"}, []dimRule{fixed(1), fixed(2), fixed(48000)}},
	},
	TextEncoder: {
		{"token_ids", "input", []string{"int32"}, []dimRule{fixed(1), condLen}},
		{"encoder_hidden_states", "output", []string{"float32"}, []dimRule{fixed(1), condLen, fixed(2048)}},
	},
	StemSeparator: {
		{"audio", "input", []string{"float32"}, []dimRule{fixed(1), fixed(2), samples(240000)}},
		{"vocals", "output", []string{"float32"}, []dimRule{fixed(1), fixed(2), samples(240000)}},
		{"instruments", "output", []string{"float32"}, []dimRule{fixed(1), fixed(2), samples(240000)}},
	},
}

// CheckContract verifies that m describes an engine of `component` whose profile covers a
// source of durationS seconds. Errors wrap ErrMismatch and say what differs.
func (m Metadata) CheckContract(component string, durationS int) error {
	if m.Component != component {
		return fmt.Errorf("%w: engine is a %s, expected a %s", ErrMismatch, m.Component, component)
	}
	rules := contracts[component]
	if len(m.Tensors) != len(rules) {
		return fmt.Errorf("%w: %s engine has %d tensors, the contract has %d", ErrMismatch, component, len(m.Tensors), len(rules))
	}
	for _, r := range rules {
		t, ok := m.Tensor(r.name)
		if !ok {
			return fmt.Errorf("%w: %s engine lacks tensor %s", ErrMismatch, component, r.name)
		}
		if t.IO != r.io {
			return fmt.Errorf("%w: tensor %s is an %s, the contract says %s", ErrMismatch, r.name, t.IO, r.io)
		}
		if !slices.Contains(r.dtypes, t.DType) {
			return fmt.Errorf("%w: tensor %s has dtype %s (want one of %v)", ErrMismatch, r.name, t.DType, r.dtypes)
		}
		if len(t.Dims) != len(r.dims) {
			return fmt.Errorf("%w: tensor %s has rank %d, the contract has %d", ErrMismatch, r.name, len(t.Dims), len(r.dims))
		}
		for i, d := range r.dims {
			got := t.Dims[i]
			if got.Symbol != d.symbol {
				return fmt.Errorf("%w: tensor %s dim %d is named %q, the contract names it %q", ErrMismatch, r.name, i, got.Symbol, d.symbol)
			}
			if d.fixed > 0 {
				if got != Fixed(d.fixed) {
					return fmt.Errorf("%w: tensor %s dim %d is %d/%d/%d, the contract fixes it at %d", ErrMismatch, r.name, i, got.Min, got.Opt, got.Max, d.fixed)
				}
				continue
			}
			if got.Min > d.needMin {
				return fmt.Errorf("%w: profile mismatch: tensor %s dim %d min %d, demon needs %d", ErrMismatch, r.name, i, got.Min, d.needMin)
			}
			if need := d.needMax(durationS); got.Max < need {
				return fmt.Errorf("%w: profile mismatch: tensor %s dim %d max %d does not cover %d s (needs %d)", ErrMismatch, r.name, i, got.Max, durationS, need)
			}
		}
	}
	return nil
}
