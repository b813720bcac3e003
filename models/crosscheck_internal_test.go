package models

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
)

// crossCheck compares a sidecar with an engine's I/O table. Every branch, with tables the
// reference backend never produces (Resolve's table tests reach it through real files).
func TestCrossCheck(t *testing.T) {
	sidecar := func() EngineRef {
		return EngineRef{Component: Decoder, Meta: Metadata{Tensors: []TensorSpec{
			{"hidden_states", "input", "bfloat16", []Dim{Dynamic("B", 1, 1, 8), Dynamic("T", 126, 250, 250), Fixed(64)}},
			{"velocity", "output", "bfloat16", []Dim{Dynamic("B", 1, 1, 8), Dynamic("T", 126, 250, 250), Fixed(64)}},
		}}}
	}
	engine := func() []trt.TensorDesc {
		desc := func(name string, input bool) trt.TensorDesc {
			return trt.TensorDesc{Name: name, Input: input, DType: trt.BFloat16, Min: []int64{1, 126, 64}, Opt: []int64{1, 250, 64}, Max: []int64{8, 250, 64}, Symbols: []string{"B", "T", ""}}
		}
		return []trt.TensorDesc{desc("hidden_states", true), desc("velocity", false)}
	}
	require.NoError(t, crossCheck(sidecar(), engine()))

	cases := []struct {
		name    string
		mutate  func(ref *EngineRef, io *[]trt.TensorDesc)
		wantMsg string
	}{
		{"engine has an extra tensor", func(_ *EngineRef, io *[]trt.TensorDesc) {
			*io = append(*io, trt.TensorDesc{Name: "extra", DType: trt.Float32, Min: []int64{1}, Opt: []int64{1}, Max: []int64{1}, Symbols: []string{""}})
		}, "sidecar lists 2 tensors, the engine has 3"},
		{"engine lacks a tensor", func(_ *EngineRef, io *[]trt.TensorDesc) { *io = (*io)[:1] }, "sidecar lists 2 tensors, the engine has 1"},
		{"engine tensor not in the sidecar", func(_ *EngineRef, io *[]trt.TensorDesc) { (*io)[1].Name = "velocity2" }, "engine tensor velocity2 is not in the sidecar"},
		{"io direction", func(_ *EngineRef, io *[]trt.TensorDesc) { (*io)[1].Input = true }, "tensor velocity: sidecar says output bfloat16 rank 3, engine has bfloat16 input=true rank 3"},
		{"dtype", func(_ *EngineRef, io *[]trt.TensorDesc) { (*io)[0].DType = trt.Float32 }, "tensor hidden_states: sidecar says input bfloat16 rank 3, engine has float32 input=true rank 3"},
		{"rank", func(r *EngineRef, _ *[]trt.TensorDesc) {
			r.Meta.Tensors[0].Dims = r.Meta.Tensors[0].Dims[:2]
		}, "tensor hidden_states: sidecar says input bfloat16 rank 2, engine has bfloat16 input=true rank 3"},
		{"opt", func(r *EngineRef, _ *[]trt.TensorDesc) { r.Meta.Tensors[1].Dims[1].Opt = 200 }, `tensor velocity dim 1: sidecar profile 126/200/250 "T", engine 126/250/250 "T"`},
		{"min", func(_ *EngineRef, io *[]trt.TensorDesc) { (*io)[0].Min[0] = 2 }, `tensor hidden_states dim 0: sidecar profile 1/1/8 "B", engine 2/1/8 "B"`},
		{"symbol", func(_ *EngineRef, io *[]trt.TensorDesc) { (*io)[0].Symbols[1] = "S" }, `tensor hidden_states dim 1: sidecar profile 126/250/250 "T", engine 126/250/250 "S"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ref, io := sidecar(), engine()
			tc.mutate(&ref, &io)
			err := crossCheck(ref, io)
			require.ErrorIs(t, err, ErrMismatch)
			assert.Contains(t, err.Error(), tc.wantMsg)
		})
	}
}
