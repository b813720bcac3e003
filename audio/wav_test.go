package audio

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWAVRoundTrip(t *testing.T) {
	src := []float32{0, 0.5, -0.5, 1, -1, 0.25, 0.125, -0.75}
	t.Run("float32 exact", func(t *testing.T) {
		var buf bytes.Buffer
		require.NoError(t, EncodeWAV(&buf, src, 2, 48000, WAVFloat32))
		assert.Equal(t, 44+4*len(src), buf.Len())
		c, err := DecodeWAV(&buf)
		require.NoError(t, err)
		assert.Equal(t, Clip{SampleRate: 48000, Channels: 2, Samples: src}, c)
		assert.Equal(t, 4, c.Frames())
	})
	t.Run("pcm16 within one step", func(t *testing.T) {
		var buf bytes.Buffer
		require.NoError(t, EncodeWAV(&buf, append(src, float32(math.NaN()), 3), 2, 44100, WAVPCM16))
		c, err := DecodeWAV(&buf)
		require.NoError(t, err)
		require.Equal(t, 44100, c.SampleRate)
		for i, s := range src {
			assert.InDelta(t, s, c.Samples[i], 1.0/32767)
		}
		assert.Equal(t, float32(0), c.Samples[len(src)], "NaN written as 0")
		assert.InDelta(t, 1, c.Samples[len(src)+1], 1e-4, "clamped")
	})
	t.Run("ragged input rejected", func(t *testing.T) {
		require.EqualError(t, EncodeWAV(&bytes.Buffer{}, src[:3], 2, 48000, WAVFloat32),
			"audio: EncodeWAV: 3 samples is not a whole number of 2-channel frames")
	})
}

// wavBytes builds a WAV by hand, with an extra chunk before data.
func wavBytes(format, channels, rate, bits int, data []byte, extensible bool) []byte {
	var b bytes.Buffer
	fmtLen := 16
	if extensible {
		fmtLen = 40
	}
	b.WriteString("RIFF")
	_ = binary.Write(&b, binary.LittleEndian, uint32(4+8+fmtLen+8+4+8+len(data)))
	b.WriteString("WAVEfmt ")
	_ = binary.Write(&b, binary.LittleEndian, uint32(fmtLen))
	code := uint16(format)
	if extensible {
		code = 0xFFFE
	}
	_ = binary.Write(&b, binary.LittleEndian, code)
	_ = binary.Write(&b, binary.LittleEndian, uint16(channels))
	_ = binary.Write(&b, binary.LittleEndian, uint32(rate))
	_ = binary.Write(&b, binary.LittleEndian, uint32(rate*channels*bits/8))
	_ = binary.Write(&b, binary.LittleEndian, uint16(channels*bits/8))
	_ = binary.Write(&b, binary.LittleEndian, uint16(bits))
	if extensible {
		_ = binary.Write(&b, binary.LittleEndian, uint16(22))
		_ = binary.Write(&b, binary.LittleEndian, uint16(bits))
		_ = binary.Write(&b, binary.LittleEndian, uint32(3))
		_ = binary.Write(&b, binary.LittleEndian, uint16(format))
		b.Write(make([]byte, 14))
	}
	b.WriteString("LIST")
	_ = binary.Write(&b, binary.LittleEndian, uint32(4))
	b.WriteString("INFO")
	b.WriteString("data")
	_ = binary.Write(&b, binary.LittleEndian, uint32(len(data)))
	b.Write(data)
	return b.Bytes()
}

func TestDecodeWAVFormats(t *testing.T) {
	t.Run("24-bit mono", func(t *testing.T) {
		data := []byte{0x00, 0x00, 0x40, 0x00, 0x00, 0xC0, 0xFF, 0xFF, 0x7F}
		c, err := DecodeWAV(bytes.NewReader(wavBytes(1, 1, 48000, 24, data, false)))
		require.NoError(t, err)
		require.Equal(t, 1, c.Channels)
		assert.Equal(t, []float32{0.5, -0.5, float32(0x7fffff) / (1 << 23)}, c.Samples)
		st := c.Stereo()
		assert.Equal(t, []float32{0.5, 0.5, -0.5, -0.5, float32(0x7fffff) / (1 << 23), float32(0x7fffff) / (1 << 23)}, st.Samples)
	})
	t.Run("32-bit float extensible, 3 channels", func(t *testing.T) {
		var data []byte
		for _, f := range []float32{0.1, 0.2, 0.3, -0.1, -0.2, -0.3} {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(f))
		}
		c, err := DecodeWAV(bytes.NewReader(wavBytes(3, 3, 48000, 32, data, true)))
		require.NoError(t, err)
		assert.Equal(t, []float32{0.1, 0.2, -0.1, -0.2}, c.Stereo().Samples)
	})
	t.Run("16-bit", func(t *testing.T) {
		data := []byte{0x00, 0x80, 0xff, 0x7f}
		c, err := DecodeWAV(bytes.NewReader(wavBytes(1, 2, 48000, 16, data, false)))
		require.NoError(t, err)
		assert.Equal(t, []float32{-1, 32767.0 / 32768}, c.Samples)
	})
	errCases := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "audio: not a RIFF/WAVE file: EOF"},
		{"not riff", []byte("RIFX0000WAVEfmt "), "audio: not a RIFF/WAVE file"},
		{"alaw", wavBytes(6, 1, 48000, 8, []byte{1, 2}, false), "audio: unsupported WAV encoding: format 6 with 8 bits per sample"},
		{"12-bit", wavBytes(1, 1, 48000, 12, []byte{1, 2}, false), "audio: unsupported WAV encoding: format 1 with 12 bits per sample"},
		{"zero channels", wavBytes(1, 0, 48000, 16, []byte{1, 2}, false), "audio: unsupported WAV encoding: 0 channels"},
		{"no data", wavBytes(1, 1, 48000, 16, nil, false)[:48], "audio: not a RIFF/WAVE file: no data chunk"},
	}
	for _, c := range errCases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeWAV(bytes.NewReader(c.in))
			require.EqualError(t, err, c.want)
		})
	}
}

func TestResampleLinear(t *testing.T) {
	// A 441-frame ramp at 44.1 kHz becomes 480 frames at 48 kHz; a linear
	// ramp survives linear interpolation exactly (up to float rounding).
	in := make([]float32, 441)
	for i := range in {
		in[i] = float32(i) / 441
	}
	c := Clip{SampleRate: 44100, Channels: 1, Samples: in}.Resample(48000)
	require.Equal(t, 480, c.Frames())
	for i := 0; i < 470; i++ {
		assert.InDelta(t, float64(i)*44100/48000/441, c.Samples[i], 1e-6)
	}
	var buf bytes.Buffer
	require.NoError(t, EncodeWAV(&buf, in, 1, 44100, WAVFloat32))
	st, err := LoadStereo48k(&buf)
	require.NoError(t, err)
	assert.Len(t, st, 960)
}
