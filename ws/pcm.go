package ws

import (
	"encoding/binary"
	"fmt"
	"math"
)

// PCM frame (client → server, protocol.md §2):
//
//	u32 LE channels | u32 LE frames | f32 LE × channels·frames, interleaved
//
// Policy for bad samples: NaN and ±Inf are replaced by 0 and finite values
// are clamped to ±MaxPCMAmplitude. A browser decode glitch should not kill
// a session, and the delta mirror and the float16 echo must stay finite.

const (
	// PCMHeaderSize is the size of the PCM frame header.
	PCMHeaderSize = 8
	// MaxPCMChannels is the largest channel count accepted (only the first
	// two are kept).
	MaxPCMChannels = 8
	// MaxInboundMessage is the WS read limit the reference server uses
	// (100 MiB, sized for 240 s of stereo float32). Servers should set
	// their socket read limit to it.
	MaxInboundMessage = 100 << 20
	// MaxPCMFrameBytes is the largest PCM frame DecodePCMFrame accepts.
	MaxPCMFrameBytes = MaxInboundMessage
	// MaxPCMAmplitude is the clamp applied to decoded samples.
	MaxPCMAmplitude = 8.0
)

// DecodePCMFrame validates a PCM frame and returns its audio with at most
// two channels (extra channels are dropped). The header must be complete,
// the channel count in [1, MaxPCMChannels], the frame count ≥ 1, and the
// payload exactly channels·frames·4 bytes; the frame must not exceed
// MaxPCMFrameBytes. channels is the returned channel count (1 or 2); frames
// is the header's frame count.
func DecodePCMFrame(b []byte) (channels, frames int, samples []float32, err error) {
	if len(b) > MaxPCMFrameBytes {
		return 0, 0, nil, fmt.Errorf("ws: PCM frame: %w: %d bytes (max %d)", ErrTooLarge, len(b), MaxPCMFrameBytes)
	}
	if len(b) < PCMHeaderSize {
		return 0, 0, nil, fmt.Errorf("ws: PCM frame: %w: %d bytes is shorter than the 8-byte header", ErrMalformed, len(b))
	}
	ch := binary.LittleEndian.Uint32(b[0:4])
	n := binary.LittleEndian.Uint32(b[4:8])
	if ch < 1 || ch > MaxPCMChannels {
		return 0, 0, nil, fmt.Errorf("ws: PCM frame: %w: %d channels (want 1..%d)", ErrMalformed, ch, MaxPCMChannels)
	}
	if n == 0 {
		return 0, 0, nil, fmt.Errorf("ws: PCM frame: %w: zero frames", ErrMalformed)
	}
	want := uint64(ch) * uint64(n) * 4
	if got := uint64(len(b) - PCMHeaderSize); got != want {
		return 0, 0, nil, fmt.Errorf("ws: PCM frame: %w: header says %d channels × %d frames = %d payload bytes, got %d",
			ErrMalformed, ch, n, want, got)
	}
	inCh := int(ch)
	channels = min(inCh, 2)
	frames = int(n)
	samples = make([]float32, frames*channels)
	p := b[PCMHeaderSize:]
	for i := range frames {
		for c := range channels {
			off := 4 * (i*inCh + c)
			samples[i*channels+c] = sanitize(math.Float32frombits(binary.LittleEndian.Uint32(p[off:])))
		}
	}
	return channels, frames, samples, nil
}

func sanitize(f float32) float32 {
	switch {
	case f != f: // NaN
		return 0
	case f > MaxPCMAmplitude: // includes +Inf
		if math.IsInf(float64(f), 1) {
			return 0
		}
		return MaxPCMAmplitude
	case f < -MaxPCMAmplitude:
		if math.IsInf(float64(f), -1) {
			return 0
		}
		return -MaxPCMAmplitude
	}
	return f
}

// AppendPCMFrame appends a PCM frame for interleaved samples to dst (what a
// browser or test client sends).
func AppendPCMFrame(dst []byte, channels int, samples []float32) []byte {
	frames := 0
	if channels > 0 {
		frames = len(samples) / channels
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(channels))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(frames))
	for _, s := range samples[:frames*channels] {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(s))
	}
	return dst
}
