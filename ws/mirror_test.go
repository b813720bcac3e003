package ws

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/demon-audio/demon/audio"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testSignal(frames, channels int, phase float64) []float32 {
	s := make([]float32, frames*channels)
	for i := range frames {
		for c := range channels {
			s[i*channels+c] = float32(0.5*math.Sin(2*math.Pi*220*float64(i)/48000+phase+float64(c)) +
				0.1*math.Sin(2*math.Pi*1234*float64(i)/48000))
		}
	}
	return s
}

// newClient builds the client side from the wire bytes of the initial
// buffer, exactly as a browser would.
func newClient(t *testing.T, channels int, initial []byte) *Mirror {
	t.Helper()
	c, err := NewMirror(channels, []float32{0, 0}[:channels])
	require.NoError(t, err)
	require.NoError(t, c.ApplyF16(channels, initial))
	t.Cleanup(c.Close)
	return c
}

func TestMirrorReproducedExactlyByClient(t *testing.T) {
	for _, enc := range []SliceEncoding{EncodingDelta, EncodingRaw} {
		t.Run(enc.String(), func(t *testing.T) {
			const frames = 5 * 48000
			src := testSignal(frames, 2, 0)
			m, err := NewMirror(2, src)
			require.NoError(t, err)
			defer m.Close()
			client := newClient(t, 2, m.AppendF16(nil))
			require.Equal(t, m.Samples(), client.Samples(), "initial buffer is bit-exact")

			r := rand.New(rand.NewPCG(3, 4))
			target := append([]float32(nil), src...) // what the server "wants"
			for k := range 200 {
				start := r.IntN(frames/1920) * 1920
				n := 17280
				gen := testSignal(n, 2, float64(k)*0.37)
				for i := range gen {
					gen[i] *= float32(0.5 + r.Float64())
				}
				frame, err := m.EncodeSlice(enc, SliceHeader{TickMs: 40, DecMs: 5, NumGens: uint32(k)}, start, gen)
				require.NoError(t, err)
				h, _, err := DecodeSliceHeader(frame)
				require.NoError(t, err)
				wantN := min(n, frames-start)
				assert.Equal(t, uint32(start), h.StartSample)
				assert.Equal(t, uint32(wantN), h.NumSamples)
				assert.Equal(t, uint16(2), h.Channels)
				assert.Equal(t, uint32(k), h.NumGens)
				require.NoError(t, client.Apply(frame))
				copy(target[start*2:], gen[:wantN*2])
			}
			require.Equal(t, m.Samples(), client.Samples(), "client reproduces the mirror bit for bit")
			// The mirror tracks the target to float16 precision (no ghosting).
			assert.Less(t, MaxAbsDiff(m.Samples(), target), 1e-3)
		})
	}
}

func TestMirrorDeltaIsStandardZstdWithContentSize(t *testing.T) {
	src := testSignal(48000, 2, 0)
	m, err := NewMirror(2, src)
	require.NoError(t, err)
	defer m.Close()
	gen := testSignal(17280, 2, 1)
	frame, err := m.EncodeSlice(EncodingDelta, SliceHeader{}, 1920, gen)
	require.NoError(t, err)
	payload := frame[SliceHeaderSize:]
	require.Equal(t, []byte{0x28, 0xb5, 0x2f, 0xfd}, payload[:4], "zstd magic")
	var hdr zstd.Header
	require.NoError(t, hdr.Decode(payload))
	assert.True(t, hdr.HasFCS, "frame carries its content size (fzstd needs no streaming)")
	assert.Equal(t, uint64(2*len(gen)), hdr.FrameContentSize)
	// Decodes with an independent decoder to the float16 deltas.
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	require.NoError(t, err)
	defer d.Close()
	raw, err := d.DecodeAll(payload, nil)
	require.NoError(t, err)
	require.Len(t, raw, 2*len(gen))
	t.Logf("delta slice: %d float16 bytes → %d zstd bytes", len(raw), len(payload))
}

func TestMirrorClampsAtBufferEnd(t *testing.T) {
	m, err := NewMirror(2, make([]float32, 2*10000))
	require.NoError(t, err)
	defer m.Close()
	gen := make([]float32, 2*1000)
	for i := range gen {
		gen[i] = 0.25
	}
	frame, err := m.EncodeSlice(EncodingRaw, SliceHeader{}, 9500, gen)
	require.NoError(t, err)
	h, p, err := DecodeSliceHeader(frame)
	require.NoError(t, err)
	assert.Equal(t, uint32(500), h.NumSamples)
	assert.Len(t, p, 500*2*2)
	assert.Equal(t, float32(0.25), m.Samples()[len(m.Samples())-1])
	assert.Equal(t, float32(0), m.Samples()[2*9499])

	_, err = m.EncodeSlice(EncodingRaw, SliceHeader{}, 10000, gen)
	require.EqualError(t, err, "ws: mirror: slice start 10000 outside buffer of 10000 frames")
	_, err = m.EncodeSlice(EncodingRaw, SliceHeader{}, 0, gen[:3])
	require.EqualError(t, err, "ws: mirror: 3 samples is not a whole, non-empty number of 2-channel frames")
}

func TestMirrorSanitisesAndResets(t *testing.T) {
	m, err := NewMirror(1, []float32{float32(math.NaN()), 100, 0.1})
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, []float32{0, MaxSliceAmplitude, audio.F16ToF32(audio.F32ToF16(0.1))}, m.Samples())
	_, err = m.EncodeSlice(EncodingDelta, SliceHeader{}, 0, []float32{float32(math.Inf(-1)), float32(math.NaN()), -100})
	require.NoError(t, err)
	// The target is clamped to ±8; the mirror moves by the float16-rounded
	// delta (−8.0999 → −8.1016), so it lands within a float16 step of it.
	assert.Equal(t, float32(-MaxSliceAmplitude), m.Samples()[0])
	assert.Equal(t, float32(0), m.Samples()[1])
	assert.InDelta(t, -MaxSliceAmplitude, m.Samples()[2], 1.0/128)

	// Swap: new length and channel count; next delta is against the new buffer.
	require.NoError(t, m.Reset(2, []float32{0.5, 0.5, 0.5, 0.5}))
	assert.Equal(t, 2, m.Frames())
	client := newClient(t, 2, m.AppendF16(nil))
	frame, err := m.EncodeSlice(EncodingDelta, SliceHeader{}, 1, []float32{0.75, 0.25})
	require.NoError(t, err)
	require.NoError(t, client.Apply(frame))
	assert.Equal(t, []float32{0.5, 0.5, 0.75, 0.25}, client.Samples())
	require.EqualError(t, m.Reset(3, make([]float32, 3)), "ws: mirror: 3 channels (want 1 or 2)")
}

func TestMirrorApplyErrors(t *testing.T) {
	c, err := NewMirror(2, make([]float32, 200))
	require.NoError(t, err)
	defer c.Close()
	bad := AppendSliceHeader(nil, SliceHeader{Flags: SliceRaw, StartSample: 100})
	require.EqualError(t, c.Apply(append(bad, 0, 0, 0, 0)), "ws: apply: slice start 100 outside buffer of 100 frames")
	odd := AppendSliceHeader(nil, SliceHeader{Flags: SliceRaw})
	require.EqualError(t, c.Apply(append(odd, 0, 0)), "ws: apply: payload of 2 bytes is not whole 2-channel float16 frames")
	junk := AppendSliceHeader(nil, SliceHeader{Flags: SliceDelta})
	require.ErrorContains(t, c.Apply(append(junk, 1, 2, 3, 4, 5)), "ws: apply: zstd:")
}

func TestEncodeSliceSteadyStateAllocations(t *testing.T) {
	for _, enc := range []SliceEncoding{EncodingDelta, EncodingRaw} {
		src := testSignal(60*48000, 2, 0)
		m, err := NewMirror(2, src)
		require.NoError(t, err)
		gen := testSignal(17280, 2, 1)
		start := 0
		allocs := testing.AllocsPerRun(50, func() {
			start = (start + 1920*7) % (60*48000 - 17280)
			if _, err := m.EncodeSlice(enc, SliceHeader{}, start, gen); err != nil {
				t.Fatal(err)
			}
		})
		m.Close()
		t.Logf("%s: %.1f allocs per slice", enc, allocs)
		assert.Zero(t, allocs, enc.String())
	}
}

func BenchmarkEncodeSlice(b *testing.B) {
	for _, enc := range []SliceEncoding{EncodingDelta, EncodingRaw} {
		b.Run(enc.String(), func(b *testing.B) {
			src := testSignal(60*48000, 2, 0)
			m, err := NewMirror(2, src)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			// A realistic update: the same music with a small change
			// (10% of a different signal mixed in).
			gens := [][]float32{testSignal(17280, 2, 0), testSignal(17280, 2, 0)}
			other := testSignal(17280, 2, 2)
			for i := range gens[1] {
				gens[0][i] = 0.95*gens[0][i] + 0.05*other[i]
				gens[1][i] = 0.9*gens[1][i] + 0.1*other[i]
			}
			b.ReportAllocs()
			b.SetBytes(17280 * 2 * 4)
			var size int
			i := 0
			for b.Loop() {
				start := (i * 1920 * 7) % (60*48000 - 17280)
				out, err := m.EncodeSlice(enc, SliceHeader{}, start, gens[i%2])
				if err != nil {
					b.Fatal(err)
				}
				size = len(out)
				i++
			}
			b.ReportMetric(float64(size), "bytes/slice")
		})
	}
}

func TestF16BufferMatchesAudioPackage(t *testing.T) {
	src := testSignal(100, 2, 0)
	m, err := NewMirror(2, src)
	require.NoError(t, err)
	defer m.Close()
	assert.True(t, bytes.Equal(audio.AppendFloat16LE(nil, src), m.AppendF16(nil)))
}

// TestDeltaCompressionRatio logs how well zstd compresses float16 deltas
// (protocol.md lists the ratio as UNSURE). It asserts only the obvious: an
// unchanged region compresses to almost nothing.
func TestDeltaCompressionRatio(t *testing.T) {
	base := testSignal(17280, 2, 0)
	other := testSignal(17280, 2, 2)
	for _, mix := range []float32{0, 0.001, 0.01, 0.1, 1} {
		m, err := NewMirror(2, base)
		require.NoError(t, err)
		gen := make([]float32, len(base))
		for i := range gen {
			gen[i] = (1-mix)*base[i] + mix*other[i]
		}
		frame, err := m.EncodeSlice(EncodingDelta, SliceHeader{}, 0, gen)
		require.NoError(t, err)
		m.Close()
		raw := 2 * len(gen)
		t.Logf("change %5.1f%%: %d → %d bytes (%.2fx)", 100*mix, raw, len(frame)-SliceHeaderSize, float64(raw)/float64(len(frame)-SliceHeaderSize))
		if mix == 0 {
			assert.Less(t, len(frame)-SliceHeaderSize, 200)
		}
	}
}
