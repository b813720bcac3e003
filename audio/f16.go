package audio

import "math"

// Float16 conversion.
//
// The wire carries IEEE-754 binary16 ("half") samples in both directions of
// the session protocol (initial buffer, swap buffer, stems, slices). The
// conversions here are bit-exact and branch-light, allocate nothing, and
// write into caller-provided buffers so the per-slice hot path stays free of
// garbage. Float32ToFloat16 rounds to nearest, ties to even, producing
// subnormals, signed zeros, ±Inf on overflow, and a quiet NaN for NaN input.

// F32ToF16 converts one float32 to binary16 bits, rounding to nearest even.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff

	if exp == 0xff { // Inf or NaN
		if mant == 0 {
			return sign | 0x7c00
		}
		// Keep the top payload bits and force the quiet bit so the result
		// can never collapse to Inf.
		return sign | 0x7e00 | uint16(mant>>13)
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00 // overflow rounds to Inf
	}
	if e <= 0 {
		// Result is subnormal (or zero). Value = M·2^(exp-150) with the
		// implicit bit; a half subnormal is m·2^-24, so m = M >> (14-e).
		if e < -10 {
			return sign // below half the smallest subnormal: ±0
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		h := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && h&1 == 1) {
			h++ // may carry into the smallest normal, which is correct
		}
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++ // a carry out of the mantissa bumps the exponent (up to Inf)
	}
	return sign | uint16(h)
}

// F16ToF32 converts binary16 bits to float32 exactly.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: mant·2^-24 is exact in float32.
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// Float32ToFloat16 converts src into dst element-wise. It converts
// min(len(dst), len(src)) elements and returns that count. It never allocates.
func Float32ToFloat16(dst []uint16, src []float32) int {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, f := range src {
		dst[i] = F32ToF16(f)
	}
	return n
}

// Float16ToFloat32 converts src into dst element-wise. It converts
// min(len(dst), len(src)) elements and returns that count. It never allocates.
func Float16ToFloat32(dst []float32, src []uint16) int {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, h := range src {
		dst[i] = F16ToF32(h)
	}
	return n
}

// Round16 replaces every sample with its float16-rounded value, in place. It
// is what a client holds after decoding a float16 buffer.
func Round16(s []float32) {
	for i, f := range s {
		s[i] = F16ToF32(F32ToF16(f))
	}
}

// AppendFloat16LE appends src as little-endian float16 bytes to dst and
// returns the extended slice (2·len(src) bytes). With enough capacity in dst
// it does not allocate.
func AppendFloat16LE(dst []byte, src []float32) []byte {
	off := len(dst)
	dst = grow(dst, 2*len(src))
	b := dst[off:]
	for i, f := range src {
		h := F32ToF16(f)
		b[2*i] = byte(h)
		b[2*i+1] = byte(h >> 8)
	}
	return dst
}

// DecodeFloat16LE decodes little-endian float16 bytes from src into dst. It
// decodes min(len(dst), len(src)/2) samples and returns that count; a trailing
// odd byte is ignored.
func DecodeFloat16LE(dst []float32, src []byte) int {
	n := min(len(dst), len(src)/2)
	for i := range n {
		dst[i] = F16ToF32(uint16(src[2*i]) | uint16(src[2*i+1])<<8)
	}
	return n
}

// grow extends b by n bytes, reusing capacity when possible. The new bytes
// are not zeroed.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*len(b)+n)
	copy(nb, b)
	return nb
}
