package ws

import (
	"fmt"
	"math"

	"github.com/demon-audio/demon/audio"
	"github.com/klauspost/compress/zstd"
)

// Mirror: the server's copy of exactly what the client holds (§4.2).
//
// The mirror starts as the float16-decoded initial buffer (not the float32
// source, unlike the reference server), so the client and the server agree
// bit for bit from the first byte. A RAW slice sets mirror = f32(f16(new));
// a DELTA slice sends d = f16(f16(new) − mirror) and sets mirror += f32(d).
// Since the client performs the same float32 operations, Mirror.Apply on a second
// Mirror reproduces the server's buffer exactly; that is what the tests and
// the test client check.
//
// The one deviation from protocol.md §4.2 (d = f16(new − mirror)) is that
// the delta targets f16(new), not new. With a float16-exact mirror the
// literal formula turns every unchanged sample into float16 rounding
// residue, which zstd cannot compress (measured 1.00x on an unchanged
// slice); targeting f16(new) makes unchanged regions exact zeros and keeps
// the client within float16 rounding of the target, the same precision as
// RAW. The wire format and the client's arithmetic are unchanged.
//
// EncodeSlice commits: it updates the mirror before returning, so the
// returned frame must be sent. Encode at dequeue time on the connection's
// writer goroutine (AudioGroup does this), never when queueing.
//
// Encoding reuses the mirror's buffers and one zstd encoder (level
// SpeedFastest, one goroutine-free encoder, standard frames that carry the
// content size), so steady-state encoding does not allocate. The returned
// slice is only valid until the next EncodeSlice. A Mirror is not safe for
// concurrent use.

// SliceEncoding selects how audio slices are sent.
type SliceEncoding int

const (
	// EncodingDelta sends zstd float16 deltas (flags=1), DEMON's default.
	EncodingDelta SliceEncoding = iota
	// EncodingRaw sends plain float16 overwrites (flags=0); demon's page
	// asks for it with "slice_encoding":"raw" because it has no zstd.
	EncodingRaw
)

// String returns "delta" or "raw".
func (e SliceEncoding) String() string {
	if e == EncodingRaw {
		return "raw"
	}
	return "delta"
}

// MarshalJSON encodes the encoding as its string.
func (e SliceEncoding) MarshalJSON() ([]byte, error) { return []byte(`"` + e.String() + `"`), nil }

// ParseSliceEncoding parses "raw" or "delta" ("" is delta).
func ParseSliceEncoding(s string) (SliceEncoding, error) {
	switch s {
	case "", "delta":
		return EncodingDelta, nil
	case "raw":
		return EncodingRaw, nil
	}
	return EncodingDelta, fmt.Errorf("%q is not one of raw, delta", s)
}

// MaxSliceAmplitude bounds the samples EncodeSlice accepts: larger values
// are clamped and NaN becomes 0, so float16 deltas never overflow.
const MaxSliceAmplitude = 8.0

// Mirror tracks the client's playback buffer for one connection.
type Mirror struct {
	channels int
	buf      []float32 // float16-exact values the client holds

	enc *zstd.Encoder
	dec *zstd.Decoder // lazily, for Apply

	f16 []byte // scratch: float16 payload before compression
	out []byte // scratch: the frame returned by EncodeSlice
	tmp []float32
}

// NewMirror returns a mirror holding f32(f16(initial)), interleaved with
// the given channel count (1 or 2).
func NewMirror(channels int, initial []float32) (*Mirror, error) {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("ws: mirror: zstd encoder: %w", err)
	}
	m := &Mirror{enc: enc}
	if err := m.Reset(channels, initial); err != nil {
		return nil, err
	}
	return m, nil
}

// Reset replaces the whole buffer (session start, source swap): the mirror
// becomes f32(f16(buf)). Call it when the swap buffer is written, before
// encoding the next slice.
func (m *Mirror) Reset(channels int, buf []float32) error {
	if channels < 1 || channels > 2 {
		return fmt.Errorf("ws: mirror: %d channels (want 1 or 2)", channels)
	}
	if len(buf) == 0 || len(buf)%channels != 0 {
		return fmt.Errorf("ws: mirror: %d samples is not a whole, non-empty number of %d-channel frames", len(buf), channels)
	}
	m.channels = channels
	if cap(m.buf) >= len(buf) {
		m.buf = m.buf[:len(buf)]
	} else {
		m.buf = make([]float32, len(buf))
	}
	for i, s := range buf {
		m.buf[i] = audio.F16ToF32(audio.F32ToF16(clampSample(s)))
	}
	return nil
}

// Channels returns the channel count.
func (m *Mirror) Channels() int { return m.channels }

// Frames returns the buffer length in frames.
func (m *Mirror) Frames() int { return len(m.buf) / m.channels }

// Samples returns the mirror's interleaved buffer. Do not modify it.
func (m *Mirror) Samples() []float32 { return m.buf }

// AppendF16 appends the whole buffer as the wire's bare float16 message
// (initial buffer, swap buffer). Because the mirror is float16-exact, the
// client decodes exactly the mirror.
func (m *Mirror) AppendF16(dst []byte) []byte { return audio.AppendFloat16LE(dst, m.buf) }

func clampSample(s float32) float32 {
	if s != s {
		return 0
	}
	return max(-MaxSliceAmplitude, min(MaxSliceAmplitude, s))
}

// EncodeSlice encodes samples (interleaved, the new content of frames
// [start, start+len/channels)) as a slice frame and commits it to the
// mirror. Writes are clamped at the buffer end; start must be inside the
// buffer. h supplies TickMs, DecMs and NumGens; Flags, StartSample,
// NumSamples and Channels are filled in. The result aliases internal
// storage valid until the next call.
func (m *Mirror) EncodeSlice(enc SliceEncoding, h SliceHeader, start int, samples []float32) ([]byte, error) {
	frames := m.Frames()
	if start < 0 || start >= frames {
		return nil, fmt.Errorf("ws: mirror: slice start %d outside buffer of %d frames", start, frames)
	}
	if len(samples) == 0 || len(samples)%m.channels != 0 {
		return nil, fmt.Errorf("ws: mirror: %d samples is not a whole, non-empty number of %d-channel frames", len(samples), m.channels)
	}
	n := min(len(samples)/m.channels, frames-start)
	src := samples[:n*m.channels]
	dst := m.buf[start*m.channels : (start+n)*m.channels]

	h.StartSample = uint32(start)
	h.NumSamples = uint32(n)
	h.Channels = uint16(m.channels)
	m.out = m.out[:0]
	if cap(m.f16) < 2*len(src) {
		m.f16 = make([]byte, 2*len(src))
	}
	p := m.f16[:2*len(src)]

	if enc == EncodingRaw {
		h.Flags = SliceRaw
		for i, s := range src {
			v := audio.F32ToF16(clampSample(s))
			p[2*i], p[2*i+1] = byte(v), byte(v>>8)
			dst[i] = audio.F16ToF32(v)
		}
		m.out = AppendSliceHeader(m.out, h)
		m.out = append(m.out, p...)
		return m.out, nil
	}
	h.Flags = SliceDelta
	for i, s := range src {
		// Target the float16-rounded sample (see the file comment): an
		// unchanged region then yields exact zeros instead of rounding
		// residue.
		target := audio.F16ToF32(audio.F32ToF16(clampSample(s)))
		d := audio.F32ToF16(target - dst[i])
		p[2*i], p[2*i+1] = byte(d), byte(d>>8)
		dst[i] += audio.F16ToF32(d)
	}
	m.out = AppendSliceHeader(m.out, h)
	if need := SliceHeaderSize + m.enc.MaxEncodedSize(len(p)); cap(m.out) < need {
		nb := make([]byte, len(m.out), need)
		copy(nb, m.out)
		m.out = nb
	}
	m.out = m.enc.EncodeAll(p, m.out)
	return m.out, nil
}

// Apply applies a slice frame the way the client does (overwrite for RAW,
// add for DELTA, clamped at the buffer end). A test client that starts from
// the same initial buffer reproduces the server's mirror exactly.
func (m *Mirror) Apply(frame []byte) error {
	h, payload, err := DecodeSliceHeader(frame)
	if err != nil {
		return err
	}
	if int(h.StartSample) >= m.Frames() {
		return fmt.Errorf("ws: apply: slice start %d outside buffer of %d frames", h.StartSample, m.Frames())
	}
	if h.Flags == SliceDelta {
		if m.dec == nil {
			m.dec, err = zstd.NewReader(nil,
				zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderMaxMemory(uint64(2*len(m.buf))+1<<16))
			if err != nil {
				return fmt.Errorf("ws: apply: zstd decoder: %w", err)
			}
		}
		m.f16, err = m.dec.DecodeAll(payload, m.f16[:0])
		if err != nil {
			return fmt.Errorf("ws: apply: zstd: %w", err)
		}
		payload = m.f16
	}
	if len(payload)%2 != 0 || (len(payload)/2)%m.channels != 0 || len(payload) == 0 {
		return fmt.Errorf("ws: apply: payload of %d bytes is not whole %d-channel float16 frames", len(payload), m.channels)
	}
	start := int(h.StartSample) * m.channels
	n := min(len(payload)/2, len(m.buf)-start)
	dst := m.buf[start : start+n]
	if h.Flags == SliceRaw {
		audio.DecodeFloat16LE(dst, payload)
		return nil
	}
	for i := range dst {
		dst[i] += audio.F16ToF32(uint16(payload[2*i]) | uint16(payload[2*i+1])<<8)
	}
	return nil
}

// ApplyF16 replaces the buffer with a bare float16 message (initial or
// swap buffer), as the client does.
func (m *Mirror) ApplyF16(channels int, b []byte) error {
	if len(b)%2 != 0 {
		return fmt.Errorf("ws: apply: odd float16 buffer length %d", len(b))
	}
	if cap(m.tmp) < len(b)/2 {
		m.tmp = make([]float32, len(b)/2)
	}
	t := m.tmp[:len(b)/2]
	audio.DecodeFloat16LE(t, b)
	return m.Reset(channels, t)
}

// Close releases the zstd encoder and decoder. The mirror must not be used
// afterwards. Close is idempotent.
func (m *Mirror) Close() {
	if m.enc != nil {
		_ = m.enc.Close()
		m.enc = nil
	}
	if m.dec != nil {
		m.dec.Close()
		m.dec = nil
	}
}

// MaxAbsDiff returns the largest absolute difference between two buffers
// (a test helper for comparing a mirror with a client copy); +Inf if the
// lengths differ.
func MaxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}
