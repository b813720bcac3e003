package ws

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Audio slice frame (server → client, protocol.md §4.1): a packed 23-byte
// little-endian header ("<BIIHffI") followed by the payload.

// SliceHeaderSize is the size of the slice header.
const SliceHeaderSize = 23

// Slice flags.
const (
	// SliceRaw: payload is float16 that overwrites the region.
	SliceRaw uint8 = 0
	// SliceDelta: payload is one zstd frame of float16 added to the region.
	SliceDelta uint8 = 1
)

// SliceHeader is the decoded slice header. StartSample and NumSamples are
// frame counts (not sample×channel); TickMs, DecMs and NumGens are debug
// telemetry.
type SliceHeader struct {
	Flags       uint8
	StartSample uint32
	NumSamples  uint32
	Channels    uint16
	TickMs      float32
	DecMs       float32
	NumGens     uint32
}

// AppendSliceHeader appends the 23-byte header to dst.
func AppendSliceHeader(dst []byte, h SliceHeader) []byte {
	dst = append(dst, h.Flags)
	dst = binary.LittleEndian.AppendUint32(dst, h.StartSample)
	dst = binary.LittleEndian.AppendUint32(dst, h.NumSamples)
	dst = binary.LittleEndian.AppendUint16(dst, h.Channels)
	dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(h.TickMs))
	dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(h.DecMs))
	dst = binary.LittleEndian.AppendUint32(dst, h.NumGens)
	return dst
}

// DecodeSliceHeader splits a slice frame into its header and payload
// (aliasing b). It fails for frames shorter than the header ("slice too
// short", which the client drops) and for flags other than RAW/DELTA.
func DecodeSliceHeader(b []byte) (SliceHeader, []byte, error) {
	if len(b) < SliceHeaderSize {
		return SliceHeader{}, nil, fmt.Errorf("ws: slice too short: %w: %d bytes, header is %d", ErrMalformed, len(b), SliceHeaderSize)
	}
	h := SliceHeader{
		Flags:       b[0],
		StartSample: binary.LittleEndian.Uint32(b[1:]),
		NumSamples:  binary.LittleEndian.Uint32(b[5:]),
		Channels:    binary.LittleEndian.Uint16(b[9:]),
		TickMs:      math.Float32frombits(binary.LittleEndian.Uint32(b[11:])),
		DecMs:       math.Float32frombits(binary.LittleEndian.Uint32(b[15:])),
		NumGens:     binary.LittleEndian.Uint32(b[19:]),
	}
	if h.Flags != SliceRaw && h.Flags != SliceDelta {
		return h, nil, fmt.Errorf("ws: slice: %w: unknown flags %d", ErrMalformed, h.Flags)
	}
	return h, b[SliceHeaderSize:], nil
}

// LatentFrameSamples is one latent frame in audio frames (40 ms at 48 kHz): a gap up to
// this long between two slices is the decoder's granularity, not stale audio.
const LatentFrameSamples = 1920

// StaleGap is the stretch of a looping track of trackFrames frames that two consecutive
// slices leave unpatched: from the end of the previous window (prevStart, prevFrames) to
// the start of the next (start), in frames. The client plays that stretch stale: an
// underrun of fresh audio (the browser never runs dry, it loops its buffer; lifecycle.md
// §6.3). It is 0 for a gap of at most one latent frame, and for a jump of half the track
// or more, which is a new position (a seek, a loop band wrapping), not a gap. demond's
// underrun metric, the load test and demon-bench all count underruns with it.
func StaleGap(prevStart, prevFrames, start, trackFrames int) int {
	if trackFrames <= 0 {
		return 0
	}
	ahead := ((start-prevStart)%trackFrames + trackFrames) % trackFrames
	if gap := ahead - prevFrames; ahead < trackFrames/2 && gap > LatentFrameSamples {
		return gap
	}
	return 0
}
