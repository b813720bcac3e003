package ws

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodePCMFrame(t *testing.T) {
	t.Run("stereo round trip", func(t *testing.T) {
		in := []float32{0.1, -0.1, 0.2, -0.2, 0.3, -0.3}
		ch, n, s, err := DecodePCMFrame(AppendPCMFrame(nil, 2, in))
		require.NoError(t, err)
		assert.Equal(t, 2, ch)
		assert.Equal(t, 3, n)
		assert.Equal(t, in, s)
	})
	t.Run("mono stays mono", func(t *testing.T) {
		ch, n, s, err := DecodePCMFrame(AppendPCMFrame(nil, 1, []float32{1, 2, 3}))
		require.NoError(t, err)
		assert.Equal(t, 1, ch)
		assert.Equal(t, 3, n)
		assert.Equal(t, []float32{1, 2, 3}, s)
	})
	t.Run("first two of four channels", func(t *testing.T) {
		ch, n, s, err := DecodePCMFrame(AppendPCMFrame(nil, 4, []float32{1, 2, 3, 4, 5, 6, 7, 8}))
		require.NoError(t, err)
		assert.Equal(t, 2, ch)
		assert.Equal(t, 2, n)
		assert.Equal(t, []float32{1, 2, 5, 6}, s)
	})
	t.Run("sanitises", func(t *testing.T) {
		in := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 100, -100, 0.5}
		_, _, s, err := DecodePCMFrame(AppendPCMFrame(nil, 2, in))
		require.NoError(t, err)
		assert.Equal(t, []float32{0, 0, 0, MaxPCMAmplitude, -MaxPCMAmplitude, 0.5}, s)
	})
	hdr := func(ch, n uint32, payload int) []byte {
		b := binary.LittleEndian.AppendUint32(nil, ch)
		b = binary.LittleEndian.AppendUint32(b, n)
		return append(b, make([]byte, payload)...)
	}
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "ws: PCM frame: malformed message: 0 bytes is shorter than the 8-byte header"},
		{"short header", []byte{2, 0, 0}, "ws: PCM frame: malformed message: 3 bytes is shorter than the 8-byte header"},
		{"zero channels", hdr(0, 1, 0), "ws: PCM frame: malformed message: 0 channels (want 1..8)"},
		{"nine channels", hdr(9, 1, 36), "ws: PCM frame: malformed message: 9 channels (want 1..8)"},
		{"zero frames", hdr(2, 0, 0), "ws: PCM frame: malformed message: zero frames"},
		{"short payload", hdr(2, 10, 79), "ws: PCM frame: malformed message: header says 2 channels × 10 frames = 80 payload bytes, got 79"},
		{"long payload", hdr(2, 10, 81), "ws: PCM frame: malformed message: header says 2 channels × 10 frames = 80 payload bytes, got 81"},
		{"overflowing header", hdr(8, 0xffffffff, 4), "ws: PCM frame: malformed message: header says 8 channels × 4294967295 frames = 137438953440 payload bytes, got 4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, _, err := DecodePCMFrame(c.in)
			require.ErrorIs(t, err, ErrMalformed)
			require.EqualError(t, err, c.want)
		})
	}
	_, _, _, err := DecodePCMFrame(make([]byte, MaxPCMFrameBytes+1))
	require.ErrorIs(t, err, ErrTooLarge)
}
