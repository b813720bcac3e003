package audio

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func ramp(frames, channels int) []float32 {
	out := make([]float32, frames*channels)
	for i := range frames {
		for c := range channels {
			out[i*channels+c] = float32(i%1000)/1000 + float32(c)
		}
	}
	return out
}

func TestNormalizeSourceLengths(t *testing.T) {
	cases := []struct {
		name       string
		frames, ch int
		crop       float64
		wantFrames int
		wantCh     int
	}{
		{"exact pool multiple", 27 * PoolFrames, 2, 0, 27 * PoolFrames, 2},
		{"floored", 30*PoolFrames + 9599, 2, 0, 30 * PoolFrames, 2},
		{"mono stays mono", 30 * PoolFrames, 1, 0, 30 * PoolFrames, 1},
		{"keeps first two of four", 30 * PoolFrames, 4, 0, 30 * PoolFrames, 2},
		{"truncated to 240 s", MaxSourceFrames + 12345, 2, 0, MaxSourceFrames, 2},
		{"crop", 60 * SampleRate, 2, 10, 10 * SampleRate, 2},
		{"crop floored to pool", 60 * SampleRate, 2, 10.1, 10*SampleRate + 0, 2},
		{"crop longer than source", 10 * SampleRate, 2, 30, 10 * SampleRate, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := ramp(c.frames, c.ch)
			keep := append([]float32(nil), in...)
			out, ch, err := NormalizeSource(in, c.ch, NormalizeOptions{CropSeconds: c.crop})
			require.NoError(t, err)
			assert.Equal(t, c.wantCh, ch)
			assert.Equal(t, c.wantFrames*c.wantCh, len(out))
			assert.Equal(t, keep, in, "input must not be modified")
			// Frames before the seam are copied verbatim.
			for i := range 100 {
				for k := range ch {
					require.Equal(t, in[i*c.ch+k], out[i*ch+k])
				}
			}
		})
	}
}

func TestNormalizeSourceTooShort(t *testing.T) {
	// 5.2 s floors to 5.2 s = 249600 frames ≥ 241920: fine. 5.1 s floors to
	// 5.0 s = 240000 < 241920: too short.
	_, _, err := NormalizeSource(ramp(249600, 2), 2, NormalizeOptions{})
	require.NoError(t, err)
	_, _, err = NormalizeSource(ramp(244800, 2), 2, NormalizeOptions{})
	require.ErrorIs(t, err, ErrSourceTooShort)
	require.EqualError(t, err, "audio: source too short: 5.00 s usable after normalisation (240000 frames); need at least 5.04 s (126 latent frames)")
	_, _, err = NormalizeSource(ramp(60*SampleRate, 2), 2, NormalizeOptions{CropSeconds: 3})
	require.ErrorIs(t, err, ErrSourceTooShort)
	_, _, err = NormalizeSource(nil, 2, NormalizeOptions{})
	require.EqualError(t, err, "audio: source too short: 0.00 s usable after normalisation (0 frames); need at least 5.04 s (126 latent frames)")
	_, _, err = NormalizeSource(make([]float32, 3), 2, NormalizeOptions{})
	require.ErrorIs(t, err, ErrInvalidSource)
	_, _, err = NormalizeSource(nil, 0, NormalizeOptions{})
	require.EqualError(t, err, "audio: invalid source: 0 channels")
}

func TestSeamFade(t *testing.T) {
	n := 30 * PoolFrames
	in := make([]float32, 2*n)
	for i := range n {
		in[2*i] = 1 // tail value 1 everywhere, head is 1 too on L
		in[2*i+1] = -1
	}
	// Head region marked with 0 on the left channel.
	for i := range SeamFadeFrames {
		in[2*i] = 0
	}
	out, _, err := NormalizeSource(in, 2, NormalizeOptions{})
	require.NoError(t, err)
	l := SeamFadeFrames
	tail := n - l
	assert.Equal(t, float32(1), out[2*(tail-1)], "frame before the fade untouched")
	assert.Equal(t, float32(1), out[2*tail], "w=0 at the first faded frame: pure tail")
	assert.Equal(t, float32(0), out[2*(n-1)], "w=1 at the last frame: pure head")
	mid := tail + (l-1)/2
	w := float64((l-1)/2) / float64(l-1)
	assert.InDelta(t, 1-w, out[2*mid], 1e-6)
	assert.Equal(t, float32(-1), out[2*(n-1)+1], "equal head and tail stay put")

	// L = N/4 for tiny buffers.
	small := []float32{0, 0.5, 1, 1, 1, 1, 1, 1}
	SeamFade(small, 1) // L = 2: w = 0, 1
	assert.Equal(t, []float32{0, 0.5, 1, 1, 1, 1, 1, 0.5}, small)
}

func TestNormalizeSourceSanitises(t *testing.T) {
	in := ramp(30*PoolFrames, 2)
	in[10] = float32(math.NaN())
	in[11] = float32(math.Inf(1))
	out, _, err := NormalizeSource(in, 2, NormalizeOptions{})
	require.NoError(t, err)
	assert.Equal(t, float32(0), out[10])
	assert.Equal(t, float32(0), out[11])
}
