package trt_test

import (
	"math"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/audio"
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
	out := trt.SliceBuffers{F32: slice, F16: make([]byte, trt.MaxSliceHalfBytes)}
	allocs = testing.AllocsPerRun(20, func() {
		if _, err := r.stream.TickInto(p, out); err != nil {
			t.Fatal(err)
		}
		if _, err := r.stream.DecodeWindow(p.PlayheadS, nil, out); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs, "Go allocations per tick with a float16 slice, and per idle decode")
	cgo0 := runtime.NumCgoCall()
	for range 10 {
		_, err := r.stream.Tick(p, slice)
		require.NoError(t, err)
	}
	assert.Equal(t, int64(10), runtime.NumCgoCall()-cgo0, "one cgo call per tick")
	cgo0 = runtime.NumCgoCall()
	_, err := r.stream.TickInto(p, out)
	require.NoError(t, err)
	_, err = r.stream.DecodeWindow(1, nil, out)
	require.NoError(t, err)
	assert.Equal(t, int64(2), runtime.NumCgoCall()-cgo0, "one cgo call for TickInto, one for DecodeWindow")
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
// benchmark). Reports, per tick and from the Go wall time (trt.TickMeter, over whole
// emission cycles): wall-ms (≈ ns/op), engine-ms (inside the decoder and windowed VAE
// engines), overhead-ms and overhead-% (the rest: sampler math, ring, cgo, Go; goal ≤ 1 %),
// cgo calls and Go allocations, and slices/s against need-slices/s, what real time needs
// (one 0.36 s slice per 0.36 s: 2.78/s). The loop runs flat out, so realtime-x is the
// headroom over that need. The shim's own DiT tick time is tick-ms.
func BenchmarkStreamTickOracle(b *testing.B) { benchTick(b, "oracle") }

func BenchmarkStreamTick(b *testing.B) { benchTick(b, "tiny-dit") }

func benchTick(b *testing.B, variant string) {
	const steps = 8
	r := newStreamRig(b, variant, 1500, 4)
	slice := make([]float32, trt.MaxSliceFloats)
	p := defaultTick()
	for range 2 * steps { // steady state: every slot busy, emissions periodic
		if _, err := r.stream.Tick(p, slice); err != nil {
			b.Fatal(err)
		}
	}
	meter := trt.TickMeter{Steps: steps}
	var tickMs float64
	b.ReportAllocs()
	b.ResetTimer()
	cgo0 := runtime.NumCgoCall()
	for b.Loop() {
		t0 := time.Now()
		res, err := r.stream.Tick(p, slice)
		if err != nil {
			b.Fatal(err)
		}
		meter.Add(time.Since(t0), res)
		tickMs += float64(res.TickMs)
	}
	n := float64(b.N)
	f := meter.Figures()
	b.ReportMetric(f.WallMs, "wall-ms")
	b.ReportMetric(f.EngineMs, "engine-ms")
	b.ReportMetric(f.OverheadMs, "overhead-ms")
	b.ReportMetric(f.OverheadPct, "overhead-%")
	b.ReportMetric(f.SlicesPerS, "slices/s")
	b.ReportMetric(f.NeedPerS, "need-slices/s")
	b.ReportMetric(f.RealtimeX, "realtime-x")
	b.ReportMetric(tickMs/n, "tick-ms")
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

// The shim's float16 copy of a slice is the wire's RAW payload: the same bits as
// converting the float32 slice in Go.
func TestStreamSliceAsFloat16(t *testing.T) {
	trttest.NoLeaks(t)
	r := newStreamRig(t, "tiny-dit", 126, 1)
	p := defaultTick()
	p.Depth = 1
	out := trt.SliceBuffers{F32: make([]float32, trt.MaxSliceFloats), F16: make([]byte, trt.MaxSliceHalfBytes+16)}
	for i := range out.F16 {
		out.F16[i] = 0xA5 // not a conversion of anything in the slice
	}
	var res trt.TickResult
	for !res.Emitted {
		var err error
		res, err = r.stream.TickInto(p, out)
		require.NoError(t, err)
	}
	n := 2 * res.NumSamples
	want := audio.AppendFloat16LE(nil, out.F32[:n])
	require.Len(t, want, 2*n)
	assert.True(t, slices.Equal(want, out.F16[:2*n]), "float16 bytes equal audio.AppendFloat16LE of the float32 slice")
	for i := 0; i < n; i += 997 {
		h := uint16(out.F16[2*i]) | uint16(out.F16[2*i+1])<<8
		require.Equal(t, audio.F32ToF16(out.F32[i]), h, "sample %d", i)
	}
	assert.Equal(t, byte(0xA5), out.F16[2*n], "nothing written past the slice")

	// Idle decodes fill the float16 buffer the same way.
	res, err := r.stream.DecodeWindow(1.3, nil, out)
	require.NoError(t, err)
	n = 2 * res.NumSamples
	assert.True(t, slices.Equal(audio.AppendFloat16LE(nil, out.F32[:n]), out.F16[:2*n]))

	// A float16 buffer too small for a slice is refused (the float32 one alone is fine).
	_, err = r.stream.TickInto(p, trt.SliceBuffers{F32: out.F32, F16: make([]byte, 10)})
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "float16 slice buffer holds 10 bytes")
}

// DecodeWindow decodes without a DiT tick (idle mode, spec §4.10 step 2): the last emitted
// latent by default, or a given one, at the playhead + lead, patched into the playback.
func TestStreamDecodeWindow(t *testing.T) {
	trttest.NoLeaks(t)
	r := newStreamRig(t, "oracle", 250, 1)
	out := trt.SliceBuffers{F32: make([]float32, trt.MaxSliceFloats)}
	_, err := r.stream.DecodeWindow(2, nil, out)
	require.ErrorIs(t, err, trt.ErrState, "nothing emitted yet")
	assert.Contains(t, err.Error(), "no latent emitted yet")

	p := defaultTick()
	p.Depth, p.PlayheadS = 1, 2.0
	ticked := firstSlice(t, r.stream, p)
	// The crossfade (25 ms = 1200 frames) blends a slice's edges with what the playback
	// buffer held; the interior is the decoded window itself.
	const xf = 2 * 1200
	n := len(ticked)
	interior := func(v []float32) []float32 { return v[xf : n-xf] }

	res, err := r.stream.DecodeWindow(2.0, nil, out)
	require.NoError(t, err)
	assert.True(t, res.Decoded)
	assert.False(t, res.Emitted)
	assert.Equal(t, uint32(1), res.NumGens)
	assert.Equal(t, int64(62)*1920, res.StartSample, "frame floor((2+0.5)·25)")
	require.Equal(t, n, 2*res.NumSamples)
	assert.True(t, slices.Equal(interior(ticked), interior(out.F32[:n])), "the last latent again")
	got := make([]float32, n)
	require.NoError(t, r.stream.ReadPlayback(res.StartSample, got))
	assert.True(t, slices.Equal(out.F32[:n], got), "the slice is patched into the playback buffer")

	res, err = r.stream.DecodeWindow(3.0, nil, out)
	require.NoError(t, err)
	assert.Equal(t, int64(87)*1920, res.StartSample, "the window follows the playhead")

	// A given latent: the reference VAE maps silence to silence.
	silence := make([]float32, 250*64)
	res, err = r.stream.DecodeWindow(2.0, silence, out)
	require.NoError(t, err)
	assert.Equal(t, int64(62)*1920, res.StartSample)
	for i, v := range interior(out.F32[:n]) {
		require.Zero(t, v, "sample %d of a silent latent", i)
	}
	// ... and it does not replace the last emitted latent.
	_, err = r.stream.DecodeWindow(2.0, nil, out)
	require.NoError(t, err)
	assert.True(t, slices.Equal(interior(ticked), interior(out.F32[:n])))

	_, err = r.stream.DecodeWindow(2.0, silence[:64*100], out)
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "latent has 100 frames")
	_, err = r.stream.DecodeWindow(2.0, silence[:65], out)
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	_, err = r.stream.DecodeWindow(2.0, nil, trt.SliceBuffers{F32: make([]float32, 10)})
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
}

// A tick whose slice buffer is too small fails before it changes anything: the ring
// buffer's timeline is the same as if it had not been called.
func TestStreamTickRefusesSmallBuffersUpFront(t *testing.T) {
	trttest.NoLeaks(t)
	r := newStreamRig(t, "oracle", 250, 4)
	p := defaultTick()
	for range 5 {
		_, err := r.stream.Tick(p, make([]float32, 10))
		require.ErrorIs(t, err, trt.ErrInvalidArgument)
	}
	slice := make([]float32, trt.MaxSliceFloats)
	for tick := 1; tick <= 9; tick++ {
		res, err := r.stream.Tick(p, slice)
		require.NoError(t, err)
		assert.Equal(t, tick == 9, res.Emitted, "tick %d: the first emit is at tick 9", tick)
	}
}

// Per-frame prompt weights (SetBlendCurve): with prompt B weighted 0 on the first half of
// the latent and 1 on the second, a window in the first half sounds like prompt A alone and
// one in the second half like prompt B alone (the oracle decoder, DCW and the reference VAE
// act per frame pair; the boundary frame 126 is even).
func TestStreamBlendCurve(t *testing.T) {
	trttest.NoLeaks(t)
	const frames = 250
	promptB := make([]float32, 40*2048)
	for i := range promptB {
		promptB[i] = 1 + float32(i%17)/40
	}
	// Two emits of the same request (same seed and inputs, so the same latent) decoded with
	// the playhead at 2 s (window frames 54..78) and at 7 s (frames 179..203).
	run := func(blend float32, curve []float32) (first, second []float32) {
		r := newStreamRig(t, "oracle", frames, 1, func(o *trt.StreamOptions) { o.MaxDepth, o.MaxPrompts = 4, 2 })
		require.NoError(t, r.stream.SetCondition(trt.CondPromptB, buffer(t, r.dev, promptB), 40))
		if curve != nil {
			require.NoError(t, r.stream.SetBlendCurve(curve))
		}
		p := defaultTick()
		p.Depth, p.PromptBlend, p.PlayheadS = 1, blend, 2.0
		first = firstSlice(t, r.stream, p)
		p.PlayheadS = 7.0
		return first, firstSlice(t, r.stream, p)
	}
	curve := make([]float32, frames)
	for i := 126; i < frames; i++ {
		curve[i] = 1
	}
	a1, a2 := run(0, nil)
	b1, b2 := run(1, nil)
	c1, c2 := run(0.5, curve) // the curve overrides the scalar blend
	maxDiff := func(x, y []float32) float64 {
		require.Len(t, y, len(x))
		var m float64
		for i := range x {
			m = max(m, math.Abs(float64(x[i]-y[i])))
		}
		return m
	}
	t.Logf("max |A−B| %.3g / %.3g, |curve−A| %.3g, |curve−B| %.3g", maxDiff(a1, b1), maxDiff(a2, b2), maxDiff(c1, a1), maxDiff(c2, b2))
	require.Greater(t, maxDiff(a1, b1), 1e-2, "the prompts sound different")
	require.Greater(t, maxDiff(a2, b2), 1e-2)
	// Two conditions take the sampler's general integration branch (§4.5): equal to the
	// single-prompt runs up to rounding, not necessarily bitwise.
	assert.Less(t, maxDiff(c1, a1), 1e-4, "weight 0 on the first half: prompt A")
	assert.Less(t, maxDiff(c2, b2), 1e-4, "weight 1 on the second half: prompt B")

	// Clearing the curve returns to the scalar blend; bad curves are refused.
	r := newStreamRig(t, "oracle", frames, 1, func(o *trt.StreamOptions) { o.MaxDepth, o.MaxPrompts = 4, 2 })
	require.ErrorIs(t, r.stream.SetBlendCurve(make([]float32, 7)), trt.ErrInvalidArgument)
	require.ErrorIs(t, r.stream.SetBlendCurve([]float32{float32(math.NaN())}), trt.ErrInvalidArgument)
	require.NoError(t, r.stream.SetBlendCurve(curve))
	require.NoError(t, r.stream.SetBlendCurve(nil))
	p := defaultTick()
	p.Depth, p.PlayheadS = 1, 2.0
	assert.True(t, slices.Equal(a1, firstSlice(t, r.stream, p)), "cleared: the scalar blend (0 = prompt A) again")

	plain := newStreamRig(t, "oracle", frames, 1)
	err := plain.stream.SetBlendCurve(curve)
	require.ErrorIs(t, err, trt.ErrState)
	assert.Contains(t, err.Error(), "max_prompts 2")
	_, err = trt.NewStream(plain.ctx, plain.vae, "session:s", trt.StreamOptions{Frames: frames, MaxDepth: 8, Depth: 4, Steps: 8, Shift: 3, MaxCondLen: 64, MaxPrompts: 2})
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "16 decoder rows, the decoder's max batch is 8")
}

// The stream rewrites its context (hint strength) and prompt (blend) in place and lets
// requests reference them by version instead of copying them every tick: requests already
// submitted must keep what they were submitted with, later ones see the change — also those
// whose request storage last held a request from before it. Depth 4 / steps 8: r1..r4
// (ticks 1..4) emit at ticks 9..12, r6..r9 at 17..20, r14..r17 at 25..28.
func TestStreamKnobChangesSpareRequestsInFlight(t *testing.T) {
	trttest.NoLeaks(t)
	run := func(change bool) [][]float32 {
		r := newStreamRig(t, "oracle", 250, 4)
		promptB := make([]float32, 40*2048)
		for i := range promptB {
			promptB[i] = 1 + float32(i%13)/20
		}
		require.NoError(t, r.stream.SetCondition(trt.CondPromptB, buffer(t, r.dev, promptB), 40))
		p := defaultTick()
		p.PlayheadS = 2.0
		slice := make([]float32, trt.MaxSliceFloats)
		var slices [][]float32
		for tick := 1; tick <= 28; tick++ {
			if change && tick == 5 {
				p.HintStrength, p.PromptBlend = 0.5, 0.7
			}
			res, err := r.stream.Tick(p, slice)
			require.NoError(t, err)
			if res.Emitted {
				slices = append(slices, append([]float32(nil), slice[:2*res.NumSamples]...))
			}
		}
		require.Len(t, slices, 12)
		return slices
	}
	steady, changed := run(false), run(true)
	// Every slice patches the same region, so once one differs the next ones' crossfaded
	// edges (1200 frames each side) do too: compare the interiors, which only the latent
	// decides.
	const xf = 2 * 1200
	interior := func(v []float32) []float32 { return v[xf : len(v)-xf] }
	for i := range 4 {
		assert.True(t, slices.Equal(interior(steady[i]), interior(changed[i])), "r%d was submitted before the change", i+1)
	}
	for i := 4; i < 12; i++ {
		assert.False(t, slices.Equal(interior(steady[i]), interior(changed[i])), "emit %d was submitted after the change", i+1)
	}
}
