package audio

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// WAV reading and writing.
//
// The reader accepts the RIFF/WAVE files a user or a fixture directory is
// likely to hold: integer PCM at 8, 16, 24 or 32 bits and IEEE float at 32
// or 64 bits, plain or WAVE_FORMAT_EXTENSIBLE, any channel count and any
// sample rate. Sample-rate policy: DecodeWAV reports the file's own rate;
// LoadStereo48k converts it to the protocol rate with linear interpolation
// (the reference server resamples files it loads from disk, protocol.md
// §3.2 step 1). Linear interpolation is cheap and deterministic; it is not a
// band-limited resampler, so sources recorded at 48 kHz (all bundled demos)
// should be preferred.

// SampleRate is the only rate the session protocol supports (protocol.md §2).
const SampleRate = 48000

// MaxWAVBytes bounds the data a decoder will read: 240 s of 8-channel
// 64-bit audio plus headroom. Larger files fail with ErrWAVTooLarge.
const MaxWAVBytes = 256 << 20

// Errors returned by DecodeWAV. They are matched with errors.Is.
var (
	ErrNotWAV         = errors.New("audio: not a RIFF/WAVE file")
	ErrWAVUnsupported = errors.New("audio: unsupported WAV encoding")
	ErrWAVTooLarge    = errors.New("audio: WAV data too large")
)

// Clip is decoded audio: interleaved frame-major samples in [-1, 1] (not
// clamped) at SampleRate Hz with Channels channels.
type Clip struct {
	SampleRate int
	Channels   int
	Samples    []float32
}

// Frames returns the number of frames (samples per channel).
func (c Clip) Frames() int {
	if c.Channels <= 0 {
		return 0
	}
	return len(c.Samples) / c.Channels
}

// Duration returns the clip length in seconds.
func (c Clip) Duration() float64 {
	if c.SampleRate <= 0 {
		return 0
	}
	return float64(c.Frames()) / float64(c.SampleRate)
}

const (
	wavFormatPCM        = 1
	wavFormatFloat      = 3
	wavFormatExtensible = 0xFFFE
)

// DecodeWAV reads a whole WAV stream. It returns the samples as float32 at the
// file's own rate and channel count.
func DecodeWAV(r io.Reader) (Clip, error) {
	br := bufio.NewReader(io.LimitReader(r, MaxWAVBytes+1<<20))
	var hdr [12]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return Clip{}, fmt.Errorf("%w: %v", ErrNotWAV, err)
	}
	if string(hdr[0:4]) != "RIFF" || string(hdr[8:12]) != "WAVE" {
		return Clip{}, ErrNotWAV
	}
	var (
		haveFmt  bool
		format   uint16
		channels int
		rate     int
		bits     int
	)
	for {
		var ch [8]byte
		if _, err := io.ReadFull(br, ch[:]); err != nil {
			if haveFmt {
				return Clip{}, fmt.Errorf("%w: no data chunk", ErrNotWAV)
			}
			return Clip{}, fmt.Errorf("%w: no fmt chunk", ErrNotWAV)
		}
		id := string(ch[0:4])
		size := int64(binary.LittleEndian.Uint32(ch[4:8]))
		switch id {
		case "fmt ":
			if size < 16 || size > 1024 {
				return Clip{}, fmt.Errorf("%w: fmt chunk size %d", ErrNotWAV, size)
			}
			b := make([]byte, size+size&1)
			if _, err := io.ReadFull(br, b); err != nil {
				return Clip{}, fmt.Errorf("%w: short fmt chunk", ErrNotWAV)
			}
			format = binary.LittleEndian.Uint16(b[0:2])
			channels = int(binary.LittleEndian.Uint16(b[2:4]))
			rate = int(binary.LittleEndian.Uint32(b[4:8]))
			bits = int(binary.LittleEndian.Uint16(b[14:16]))
			if format == wavFormatExtensible {
				if size < 40 {
					return Clip{}, fmt.Errorf("%w: short WAVE_FORMAT_EXTENSIBLE header", ErrNotWAV)
				}
				// The sub-format GUID starts with the format code.
				format = binary.LittleEndian.Uint16(b[24:26])
			}
			haveFmt = true
		case "data":
			if !haveFmt {
				return Clip{}, fmt.Errorf("%w: data chunk before fmt chunk", ErrNotWAV)
			}
			return decodeWAVData(br, size, format, channels, rate, bits)
		default:
			if _, err := io.CopyN(io.Discard, br, size+size&1); err != nil {
				return Clip{}, fmt.Errorf("%w: truncated %q chunk", ErrNotWAV, id)
			}
		}
	}
}

func decodeWAVData(r io.Reader, size int64, format uint16, channels, rate, bits int) (Clip, error) {
	if channels < 1 || channels > 64 {
		return Clip{}, fmt.Errorf("%w: %d channels", ErrWAVUnsupported, channels)
	}
	if rate < 1000 || rate > 768000 {
		return Clip{}, fmt.Errorf("%w: sample rate %d Hz", ErrWAVUnsupported, rate)
	}
	switch {
	case format == wavFormatPCM && (bits == 8 || bits == 16 || bits == 24 || bits == 32):
	case format == wavFormatFloat && (bits == 32 || bits == 64):
	default:
		return Clip{}, fmt.Errorf("%w: format %d with %d bits per sample", ErrWAVUnsupported, format, bits)
	}
	if size > MaxWAVBytes {
		return Clip{}, fmt.Errorf("%w: %d bytes (max %d)", ErrWAVTooLarge, size, MaxWAVBytes)
	}
	// Streams written before their length was known often carry a 0 or
	// 0xFFFFFFFF size: read to EOF in that case, and tolerate a short final
	// chunk otherwise.
	var data []byte
	var err error
	if size == 0 || size == 0xFFFFFFFF {
		data, err = io.ReadAll(io.LimitReader(r, MaxWAVBytes+1))
		if len(data) > MaxWAVBytes {
			return Clip{}, fmt.Errorf("%w: more than %d bytes", ErrWAVTooLarge, MaxWAVBytes)
		}
	} else {
		data = make([]byte, size)
		var n int
		n, err = io.ReadFull(r, data)
		data = data[:n]
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = nil
		}
	}
	if err != nil {
		return Clip{}, fmt.Errorf("audio: reading WAV data: %w", err)
	}
	bps := bits / 8
	frames := len(data) / (bps * channels)
	out := make([]float32, frames*channels)
	switch {
	case bits == 8:
		for i := range out {
			out[i] = (float32(data[i]) - 128) / 128
		}
	case bits == 16:
		for i := range out {
			out[i] = float32(int16(binary.LittleEndian.Uint16(data[2*i:]))) / 32768
		}
	case bits == 24:
		for i := range out {
			b := data[3*i:]
			v := int32(uint32(b[0])<<8|uint32(b[1])<<16|uint32(b[2])<<24) >> 8
			out[i] = float32(v) / (1 << 23)
		}
	case bits == 32 && format == wavFormatPCM:
		for i := range out {
			out[i] = float32(float64(int32(binary.LittleEndian.Uint32(data[4*i:]))) / (1 << 31))
		}
	case bits == 32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
	default: // 64-bit float
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:])))
		}
	}
	return Clip{SampleRate: rate, Channels: channels, Samples: out}, nil
}

// Stereo returns the clip as two channels: mono is duplicated, channels
// beyond the first two are dropped. A stereo clip is returned unchanged
// (sharing its samples).
func (c Clip) Stereo() Clip {
	switch {
	case c.Channels == 2:
		return c
	case c.Channels == 1:
		out := make([]float32, 2*len(c.Samples))
		for i, s := range c.Samples {
			out[2*i], out[2*i+1] = s, s
		}
		return Clip{SampleRate: c.SampleRate, Channels: 2, Samples: out}
	case c.Channels > 2:
		n := c.Frames()
		out := make([]float32, 2*n)
		for i := range n {
			out[2*i] = c.Samples[i*c.Channels]
			out[2*i+1] = c.Samples[i*c.Channels+1]
		}
		return Clip{SampleRate: c.SampleRate, Channels: 2, Samples: out}
	}
	return Clip{SampleRate: c.SampleRate, Channels: 2}
}

// Resample returns the clip at rate Hz using linear interpolation. Output
// frame i takes its value from input position i·c.SampleRate/rate; the
// output has floor(frames·rate/c.SampleRate) frames. A clip already at rate
// is returned unchanged.
func (c Clip) Resample(rate int) Clip {
	if c.SampleRate == rate || c.Channels <= 0 || rate <= 0 || c.SampleRate <= 0 {
		return c
	}
	inN := c.Frames()
	outN := int(int64(inN) * int64(rate) / int64(c.SampleRate))
	ch := c.Channels
	out := make([]float32, outN*ch)
	step := float64(c.SampleRate) / float64(rate)
	for i := range outN {
		pos := float64(i) * step
		j := int(pos)
		frac := float32(pos - float64(j))
		j1 := min(j+1, inN-1)
		for k := range ch {
			a := c.Samples[j*ch+k]
			b := c.Samples[j1*ch+k]
			out[i*ch+k] = a + (b-a)*frac
		}
	}
	return Clip{SampleRate: rate, Channels: ch, Samples: out}
}

// LoadStereo48k decodes a WAV stream and returns interleaved stereo at
// SampleRate (mono duplicated, extra channels dropped, other rates
// resampled linearly).
func LoadStereo48k(r io.Reader) ([]float32, error) {
	c, err := DecodeWAV(r)
	if err != nil {
		return nil, err
	}
	return c.Stereo().Resample(SampleRate).Samples, nil
}

// WAVFormat selects the sample encoding EncodeWAV writes.
type WAVFormat int

const (
	// WAVFloat32 writes IEEE float samples (format 3, 32 bits), lossless.
	WAVFloat32 WAVFormat = iota
	// WAVPCM16 writes 16-bit integer PCM, clamped to [-1, 1] and rounded.
	WAVPCM16
)

// EncodeWAV writes interleaved samples as a canonical 44-byte-header WAV.
func EncodeWAV(w io.Writer, samples []float32, channels, rate int, format WAVFormat) error {
	if channels < 1 || channels > 0xffff {
		return fmt.Errorf("audio: EncodeWAV: invalid channel count %d", channels)
	}
	if len(samples)%channels != 0 {
		return fmt.Errorf("audio: EncodeWAV: %d samples is not a whole number of %d-channel frames", len(samples), channels)
	}
	bits, code := 32, uint16(wavFormatFloat)
	if format == WAVPCM16 {
		bits, code = 16, wavFormatPCM
	}
	dataLen := len(samples) * bits / 8
	if dataLen > math.MaxUint32-36 {
		return fmt.Errorf("audio: EncodeWAV: %d bytes exceeds the WAV size limit", dataLen)
	}
	buf := make([]byte, 44, 44+dataLen)
	copy(buf[0:], "RIFF")
	binary.LittleEndian.PutUint32(buf[4:], uint32(36+dataLen))
	copy(buf[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(buf[16:], 16)
	binary.LittleEndian.PutUint16(buf[20:], code)
	binary.LittleEndian.PutUint16(buf[22:], uint16(channels))
	binary.LittleEndian.PutUint32(buf[24:], uint32(rate))
	binary.LittleEndian.PutUint32(buf[28:], uint32(rate*channels*bits/8))
	binary.LittleEndian.PutUint16(buf[32:], uint16(channels*bits/8))
	binary.LittleEndian.PutUint16(buf[34:], uint16(bits))
	copy(buf[36:], "data")
	binary.LittleEndian.PutUint32(buf[40:], uint32(dataLen))
	if format == WAVPCM16 {
		for _, s := range samples {
			if s != s { // NaN
				s = 0
			}
			v := math.Round(float64(max(-1, min(1, s))) * 32767)
			buf = binary.LittleEndian.AppendUint16(buf, uint16(int16(v)))
		}
	} else {
		for _, s := range samples {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(s))
		}
	}
	_, err := w.Write(buf)
	return err
}
