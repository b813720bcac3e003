//go:build !asan

// Not in the -asan pass: LeakSanitizer scans every mapping at exit and faults on the
// fake driver's deliberately inaccessible "device" address range. These tests run in
// the ordinary and -race passes.

package trt_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

// stagedStream builds a decoder context and stream on dev (host, or cuda on the fake
// driver), sourced and conditioned from device buffers like a session does.
func stagedStream(t *testing.T, dev *trt.Device, frames int) *trt.Stream {
	t.Helper()
	dec := loadRef(t, dev, "decoder", "oracle", 10)
	vae := loadRef(t, dev, "vae_decode_windowed", "", 240)
	enc := loadRef(t, dev, "vae_encode", "", 10)
	ctx, err := dec.NewContext("session:staged")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ctx.Close() })
	s, err := trt.NewStream(ctx, vae, "session:staged", trt.StreamOptions{
		Frames: frames, MaxDepth: 8, Depth: 4, Steps: 8, Shift: 3, MaxCondLen: 64, VAEWindow: 0.36, LeadS: 0.5,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })

	samples := frames * 1920
	audio := make([]float32, 2*samples)
	for i := range samples {
		v := float32(0.3) * float32(((i/37)%11)-5) / 5
		audio[i], audio[samples+i] = v, -v
	}
	moments := buffer(t, dev, make([]float32, 128*frames))
	ectx, err := enc.NewContext("session:staged")
	require.NoError(t, err)
	defer ectx.Close()
	require.NoError(t, ectx.SetShape("audio", 1, 2, int64(samples)))
	require.NoError(t, ectx.Bind("audio", buffer(t, dev, audio)))
	require.NoError(t, ectx.Bind("moments", moments))
	require.NoError(t, ectx.Execute())
	require.NoError(t, s.SetSource(moments, frames))
	cond := make([]float32, 40*2048)
	for i := range cond {
		cond[i] = float32(i%29) / 290
	}
	require.NoError(t, s.SetCondition(trt.CondPromptA, buffer(t, dev, cond), 40))
	playback := make([]float32, 2*samples)
	for i := range playback {
		playback[i] = float32(i%97) / 970
	}
	require.NoError(t, s.SetPlayback(playback))
	return s
}

// A stream on the cuda device (fake driver) computes on pinned shadows and produces the
// host device's slices and playback buffer bit for bit; its device bytes on the ledger
// equal the host device's; ticks move neither the ledger nor the staging ledger.
func TestCUDAStagedStreamMatchesHost(t *testing.T) {
	trttest.NoLeaks(t)
	const frames = 250
	host := trttest.HostDevice(t, 8<<30, nil)
	trttest.FakeCUDA(t, trttest.FakeCUDAOptions{TotalBytes: 8 << 30})
	gpu := trttest.CUDADevice(t, nil)
	hs := stagedStream(t, host, frames)
	gs := stagedStream(t, gpu, frames)

	hl, gl := trttest.Snapshot(t, host), trttest.Snapshot(t, gpu)
	assert.Equal(t, hl.Kind("stream").UsedBytes, gl.Kind("stream").UsedBytes, "same device bytes reserved")
	assert.Equal(t, hs.Bytes(), gs.Bytes())
	st0, err := gpu.StagingTotals()
	require.NoError(t, err)
	assert.Positive(t, st0.UsedBytes)

	p := defaultTick()
	hslice := make([]float32, trt.MaxSliceFloats)
	gslice := make([]float32, trt.MaxSliceFloats)
	decoded := 0
	for range 24 {
		p.PlayheadS += 0.04
		hr, err := hs.Tick(p, hslice)
		require.NoError(t, err)
		gr, err := gs.Tick(p, gslice)
		require.NoError(t, err)
		require.Equal(t, hr.Decoded, gr.Decoded)
		require.Equal(t, hr.StartSample, gr.StartSample)
		require.Equal(t, hr.NumSamples, gr.NumSamples)
		if hr.Decoded {
			decoded++
			require.Equal(t, hslice[:2*hr.NumSamples], gslice[:2*gr.NumSamples], "slice at tick %d", decoded)
		}
	}
	require.GreaterOrEqual(t, decoded, 2)
	hp := make([]float32, 2*frames*1920)
	gp := make([]float32, 2*frames*1920)
	require.NoError(t, hs.ReadPlayback(0, hp))
	require.NoError(t, gs.ReadPlayback(0, gp))
	assert.Equal(t, hp, gp, "the patched playback buffers match")

	gl2 := trttest.Snapshot(t, gpu)
	st1, err := gpu.StagingTotals()
	require.NoError(t, err)
	assert.Equal(t, gl.Totals.Allocations, gl2.Totals.Allocations, "ticks allocate no device memory")
	assert.Equal(t, st0.Allocations, st1.Allocations, "ticks allocate no staging memory")
}
