package trt_test

import (
	"runtime"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

// streamRig builds what a session owns: a decoder context, a stream, its source, prompt
// and playback buffer, on a fresh device.
type streamRig struct {
	dev    *trt.Device
	dec    *trt.Engine
	vae    *trt.Engine
	ctx    *trt.Context
	stream *trt.Stream
	frames int
}

// newStreamRig builds the rig; edits adjust the stream options (MaxDepth 8, Steps 8,
// MaxCondLen 64, VAEWindow 0.36, LeadS 0.5 by default).
func newStreamRig(t testing.TB, variant string, frames int, depth int, edits ...func(*trt.StreamOptions)) *streamRig {
	t.Helper()
	d := trttest.HostDevice(t, 8<<30, nil)
	r := &streamRig{dev: d, frames: frames}
	r.dec = loadRef(t, d, "decoder", variant, 60)
	r.vae = loadRef(t, d, "vae_decode_windowed", "", 240)
	enc := loadRef(t, d, "vae_encode", "", 60)
	var err error
	r.ctx, err = r.dec.NewContext("session:s")
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.ctx.Close() })
	opts := trt.StreamOptions{
		Frames: frames, MaxDepth: 8, Depth: depth, Steps: 8, Shift: 3, MaxCondLen: 64, VAEWindow: 0.36, LeadS: 0.5,
	}
	for _, edit := range edits {
		edit(&opts)
	}
	r.stream, err = trt.NewStream(r.ctx, r.vae, "session:s", opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.stream.Close() })

	// Source: a chord-like signal, VAE-encoded.
	samples := frames * 1920
	audio := make([]float32, 2*samples)
	for i := range samples {
		v := float32(0.3) * float32(((i/37)%11)-5) / 5
		audio[i], audio[samples+i] = v, -v
	}
	audioBuf := buffer(t, d, audio)
	moments := buffer(t, d, make([]float32, 128*frames))
	ectx, err := enc.NewContext("session:s")
	require.NoError(t, err)
	defer ectx.Close()
	require.NoError(t, ectx.SetShape("audio", 1, 2, int64(samples)))
	require.NoError(t, ectx.Bind("audio", audioBuf))
	require.NoError(t, ectx.Bind("moments", moments))
	require.NoError(t, ectx.Execute())
	require.NoError(t, r.stream.SetSource(moments, frames))

	cond := make([]float32, 40*2048)
	for i := range cond {
		cond[i] = float32(i%29) / 290
	}
	require.NoError(t, r.stream.SetCondition(trt.CondPromptA, buffer(t, d, cond), 40))
	playback := make([]float32, 2*samples)
	require.NoError(t, r.stream.SetPlayback(playback))
	return r
}

func defaultTick() *trt.TickParams {
	return &trt.TickParams{Submit: true, Seed: 42, Denoise: 1, HintStrength: 1, Guidance: 1, VelocityScale: 1, Shift: 3, Depth: 4, Decode: true}
}

func TestStreamEmitsSlicesOnTheRingTimeline(t *testing.T) {
	trttest.NoLeaks(t)
	r := newStreamRig(t, "oracle", 250, 4)
	slice := make([]float32, trt.MaxSliceFloats)
	p := defaultTick()
	var emits []int
	for tick := 1; tick <= 20; tick++ {
		res, err := r.stream.Tick(p, slice)
		require.NoError(t, err)
		assert.Equal(t, 4, res.Depth)
		if res.Emitted {
			emits = append(emits, tick)
			require.True(t, res.Decoded)
			assert.Equal(t, 9*1920, res.NumSamples, "0.36 s slices")
			assert.Zero(t, res.StartSample%1920, "latent-aligned")
		}
	}
	// depth 4 / steps 8: r1..r4 emit at ticks 9..12, r6..r9 at 17..20 (spec §4.4).
	assert.Equal(t, []int{9, 10, 11, 12, 17, 18, 19, 20}, emits)
}

// VAEWindow crosses the C API as a float32: 0.12 s and 0.32 s keep 3 and 8 latent frames
// (spec §4.9 K = int(w·25) on the value the user meant, not on 0.11999999).
func TestStreamWindowKeepsWholeFrames(t *testing.T) {
	trttest.NoLeaks(t)
	for _, c := range []struct {
		window float32
		frames int
	}{{0.12, 3}, {0.32, 8}, {0.04, 1}} {
		r := newStreamRig(t, "oracle", 250, 1, func(o *trt.StreamOptions) { o.VAEWindow = c.window })
		p := defaultTick()
		p.Depth = 1
		assert.Len(t, firstSlice(t, r.stream, p), 2*c.frames*1920, "window %v s", c.window)
	}
}

func TestStreamSlicePatchesThePlaybackBuffer(t *testing.T) {
	trttest.NoLeaks(t)
	r := newStreamRig(t, "oracle", 250, 1)
	slice := make([]float32, trt.MaxSliceFloats)
	p := defaultTick()
	p.Depth = 1
	p.PlayheadS = 3.0
	var res trt.TickResult
	var err error
	for !res.Emitted {
		res, err = r.stream.Tick(p, slice)
		require.NoError(t, err)
	}
	// Decoded 0.5 s ahead of the playhead.
	assert.Equal(t, int64(87)*1920, res.StartSample, "frame floor(3.5·25)")
	got := make([]float32, 2*res.NumSamples)
	require.NoError(t, r.stream.ReadPlayback(res.StartSample, got))
	assert.Equal(t, slice[:2*res.NumSamples], got, "the slice is what the playback buffer now holds")
	var energy float64
	for _, v := range got {
		energy += float64(v) * float64(v)
	}
	assert.Positive(t, energy, "the slice is audible")
}

func TestStreamIsDeterministicPerSeed(t *testing.T) {
	trttest.NoLeaks(t)
	run := func(seed int64) []float32 {
		r := newStreamRig(t, "tiny-dit", 126, 1)
		p := defaultTick()
		p.Depth, p.Seed = 1, seed
		slice := make([]float32, trt.MaxSliceFloats)
		for {
			res, err := r.stream.Tick(p, slice)
			require.NoError(t, err)
			if res.Emitted {
				return append([]float32(nil), slice[:2*res.NumSamples]...)
			}
		}
	}
	a, b, c := run(7), run(7), run(8)
	assert.Equal(t, a, b, "same seed, same audio")
	assert.NotEqual(t, a, c, "different seed, different audio")
}

// The hot path: one cgo call per tick and zero Go allocations.
func TestStreamTickAllocatesNothing(t *testing.T) {
	trttest.NoLeaks(t)
	r := newStreamRig(t, "oracle", 250, 4)
	slice := make([]float32, trt.MaxSliceFloats)
	p := defaultTick()
	for range 12 {
		_, err := r.stream.Tick(p, slice)
		require.NoError(t, err)
	}
	before := trttest.Snapshot(t, r.dev).Totals
	allocs := testing.AllocsPerRun(50, func() {
		p.PlayheadS += 0.04
		if _, err := r.stream.Tick(p, slice); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs, "Go allocations per tick")
	cgo0 := runtime.NumCgoCall()
	for range 10 {
		_, err := r.stream.Tick(p, slice)
		require.NoError(t, err)
	}
	assert.Equal(t, int64(10), runtime.NumCgoCall()-cgo0, "one cgo call per tick")
	after := trttest.Snapshot(t, r.dev).Totals
	assert.Equal(t, before.Allocations, after.Allocations, "the ledger does not move between ticks")
	assert.Equal(t, before.UsedBytes, after.UsedBytes)
}

func TestStreamBadInput(t *testing.T) {
	trttest.NoLeaks(t)
	r := newStreamRig(t, "oracle", 250, 4)
	_, err := r.stream.Tick(defaultTick(), make([]float32, 10))
	for err == nil {
		_, err = r.stream.Tick(defaultTick(), make([]float32, 10))
	}
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "slice buffer holds 10 floats")
	require.ErrorIs(t, r.stream.SetPlayback(make([]float32, 10)), trt.ErrInvalidArgument)
	require.ErrorIs(t, r.stream.ReadPlayback(1<<40, make([]float32, 2)), trt.ErrInvalidArgument)

	_, err = trt.NewStream(r.ctx, r.vae, "session:s", trt.StreamOptions{Frames: 20, MaxDepth: 8, Depth: 4, Steps: 8, Shift: 3, MaxCondLen: 64})
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "20 latent frames outside the decoder profile [126, 1500]")
	_, err = trt.NewStream(r.ctx, r.dec, "session:s", trt.StreamOptions{Frames: 250, MaxDepth: 8, Depth: 4, Steps: 8, Shift: 3, MaxCondLen: 64})
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "no windowed VAE decoder")

	fresh, err := trt.NewStream(r.ctx, r.vae, "session:s2", trt.StreamOptions{Frames: 250, MaxDepth: 8, Depth: 4, Steps: 8, Shift: 3, MaxCondLen: 64})
	require.NoError(t, err)
	_, err = fresh.Tick(defaultTick(), nil)
	require.ErrorIs(t, err, trt.ErrState, "tick before source/prompt/playback")
	require.NoError(t, fresh.Close())
	require.NoError(t, fresh.Close())
}

// BenchmarkStreamTick: depth 4 / steps 8 / T=1500 with the tiny DiT (issue: pipeline
// benchmark). Reports the tick time, the time outside engine execution, cgo calls and Go
// allocations, and realtime-x: seconds of decoded audio per wall-clock second. Real time
// needs realtime-x >= 1, i.e. one 0.36 s slice per 0.36 s (~2.8 slices/s, spec/engine.md
// §7.3); the tick loop here runs flat out, so realtime-x is the headroom over that need.
func BenchmarkStreamTickOracle(b *testing.B) { benchTick(b, "oracle") }

func BenchmarkStreamTick(b *testing.B) { benchTick(b, "tiny-dit") }

// sampleRate is the stream's audio rate: 1920 samples per latent frame at 25 frames/s.
const sampleRate = 48000

func benchTick(b *testing.B, variant string) {
	r := newStreamRig(b, variant, 1500, 4)
	slice := make([]float32, trt.MaxSliceFloats)
	p := defaultTick()
	for range 8 {
		if _, err := r.stream.Tick(p, slice); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	var decoded, samples int
	var tickMs, engineMs float64
	cgo0 := runtime.NumCgoCall()
	for b.Loop() {
		res, err := r.stream.Tick(p, slice)
		if err != nil {
			b.Fatal(err)
		}
		if res.Decoded {
			decoded++
			samples += res.NumSamples
		}
		tickMs += float64(res.TickMs)
		engineMs += float64(res.EngineMs)
	}
	n := float64(b.N)
	b.ReportMetric(float64(decoded)/b.Elapsed().Seconds(), "slices/s")
	b.ReportMetric(float64(samples)/sampleRate/b.Elapsed().Seconds(), "realtime-x")
	b.ReportMetric(tickMs/n, "tick-ms")
	b.ReportMetric((tickMs-engineMs)/n, "overhead-ms")
	b.ReportMetric(100*(tickMs-engineMs)/tickMs, "overhead-%")
	b.ReportMetric(float64(runtime.NumCgoCall()-cgo0)/n, "cgo-calls/tick")
}

// firstSlice ticks p until the first latent is emitted and returns a copy of its slice.
func firstSlice(t testing.TB, s *trt.Stream, p *trt.TickParams) []float32 {
	t.Helper()
	slice := make([]float32, trt.MaxSliceFloats)
	for range 64 {
		res, err := s.Tick(p, slice)
		require.NoError(t, err)
		if res.Emitted {
			require.True(t, res.Decoded)
			return append([]float32(nil), slice[:2*res.NumSamples]...)
		}
	}
	t.Fatal("no latent emitted in 64 ticks")
	return nil
}

// depth1Slice runs a fresh oracle stream at depth 1 with the playhead at 2 s (the decoded
// window covers latent frames 54..78) after setup, and returns the first slice.
func depth1Slice(t *testing.T, setup func(s *trt.Stream)) []float32 {
	r := newStreamRig(t, "oracle", 250, 1)
	setup(r.stream)
	p := defaultTick()
	p.Depth, p.PlayheadS = 1, 2.0
	return firstSlice(t, r.stream, p)
}

// A shared-curve override changes what in-flight slots produce from the next tick, and
// clearing it restores the default (spec §4.8).
func TestStreamSharedCurves(t *testing.T) {
	trttest.NoLeaks(t)
	run := func(curve func(s *trt.Stream)) []float32 { return depth1Slice(t, curve) }
	plain := run(func(*trt.Stream) {})
	scaled := run(func(s *trt.Stream) { require.NoError(t, s.SetCurve("velocity_scale", []float32{0.5})) })
	perFrame := make([]float32, 250)
	for i := range perFrame {
		perFrame[i] = 0.5
	}
	framed := run(func(s *trt.Stream) { require.NoError(t, s.SetCurve("velocity_scale", perFrame)) })
	cleared := run(func(s *trt.Stream) {
		require.NoError(t, s.SetCurve("velocity_scale", []float32{0.5}))
		require.NoError(t, s.SetCurve("velocity_scale", nil))
	})
	assert.NotEqual(t, plain, scaled, "velocity scale 0.5 changes the result")
	assert.Equal(t, scaled, framed, "a constant per-frame curve equals the scalar")
	assert.Equal(t, plain, cleared, "clearing restores the default")

	r := newStreamRig(t, "oracle", 250, 1)
	err := r.stream.SetCurve("nope", []float32{1})
	require.ErrorIs(t, err, trt.ErrNotFound)
	require.ErrorIs(t, r.stream.SetCurve("velocity_scale", make([]float32, 7)), trt.ErrInvalidArgument)
}

// The stream submits its source as the x0 target (spec §4.10 step 4), so the shared
// x0_target_strength curve pulls the result towards the source: a scalar strength changes
// the slice, and a per-frame curve changes it only where it is non-zero (the oracle
// decoder and DCW act per frame pair, the windowed VAE sees only the window's frames).
func TestStreamX0TargetStrength(t *testing.T) {
	trttest.NoLeaks(t)
	const frames = 250
	strength := func(from, to int, v float32) func(s *trt.Stream) {
		return func(s *trt.Stream) {
			c := make([]float32, frames)
			for i := from; i < to; i++ {
				c[i] = v
			}
			require.NoError(t, s.SetCurve("x0_target_strength", c))
		}
	}
	plain := depth1Slice(t, func(*trt.Stream) {})
	scalar := depth1Slice(t, func(s *trt.Stream) { require.NoError(t, s.SetCurve("x0_target_strength", []float32{0.5})) })
	inWindow := depth1Slice(t, strength(50, 90, 0.5))
	outside := depth1Slice(t, strength(150, frames, 0.5))
	// slices.Equal rather than assert.Equal: a failure names the case, not 34560 samples.
	assert.False(t, slices.Equal(plain, scalar), "x0_target_strength 0.5 changes the slice")
	assert.True(t, slices.Equal(scalar, inWindow), "a curve equal to the scalar over the window gives the same slice")
	assert.True(t, slices.Equal(plain, outside), "a curve that is zero over the window leaves it alone")
}
