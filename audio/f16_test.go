package audio

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestF16RoundTripAllHalves(t *testing.T) {
	for h := range 1 << 16 {
		f := F16ToF32(uint16(h))
		got := F32ToF16(f)
		if math.IsNaN(float64(f)) {
			require.Equal(t, uint16(0x7c00), got&0x7c00, "h=%#04x", h)
			require.NotZero(t, got&0x3ff, "NaN must stay NaN, h=%#04x", h)
			continue
		}
		require.Equal(t, uint16(h), got, "h=%#04x f=%g", h, f)
	}
}

func TestF32ToF16Cases(t *testing.T) {
	cases := []struct {
		name string
		in   float32
		want uint16
	}{
		{"zero", 0, 0x0000},
		{"neg zero", float32(math.Copysign(0, -1)), 0x8000},
		{"one", 1, 0x3c00},
		{"minus two", -2, 0xc000},
		{"max half", 65504, 0x7bff},
		{"just below overflow rounds down", 65519, 0x7bff},
		{"overflow tie rounds to inf", 65520, 0x7c00},
		{"huge", 1e10, 0x7c00},
		{"inf", float32(math.Inf(1)), 0x7c00},
		{"-inf", float32(math.Inf(-1)), 0xfc00},
		{"min normal", 1.0 / 16384, 0x0400},
		{"min subnormal", 1.0 / (1 << 24), 0x0001},
		{"half min subnormal ties to even zero", 1.0 / (1 << 25), 0x0000},
		{"1.5 min subnormal ties to even 2", 3.0 / (1 << 25), 0x0002},
		{"just above half min subnormal", math.Nextafter32(1.0/(1<<25), 1), 0x0001},
		{"tiny", 1e-30, 0x0000},
		{"float32 subnormal", math.Float32frombits(1), 0x0000},
		{"tie to even down", 1 + 1.0/2048, 0x3c00},
		{"tie to even up", 1 + 3.0/2048, 0x3c02},
		{"largest subnormal rounds into normal", (1.0 / 16384) * (1 - 1.0/4096), 0x0400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, F32ToF16(c.in), "in=%g", c.in)
		})
	}
	nan := F32ToF16(float32(math.NaN()))
	assert.Equal(t, uint16(0x7c00), nan&0x7c00)
	assert.NotZero(t, nan&0x3ff)
	assert.True(t, math.IsNaN(float64(F16ToF32(nan))))
}

// TestF32ToF16Nearest checks round-to-nearest-even against the neighbouring
// halves for random float32 values across the whole exponent range.
func TestF32ToF16Nearest(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 300000 {
		f := math.Float32frombits(r.Uint32())
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) || math.Abs(float64(f)) >= 65520 {
			continue
		}
		h := F32ToF16(f)
		got := float64(F16ToF32(h))
		err := math.Abs(float64(f) - got)
		for _, nb := range []uint16{h - 1, h + 1} {
			if nb&0x7c00 == 0x7c00 || (h&0x7fff == 0 && nb == h-1) {
				continue
			}
			alt := float64(F16ToF32(nb))
			altErr := math.Abs(float64(f) - alt)
			require.LessOrEqual(t, err, altErr, "f=%g h=%#04x nb=%#04x", f, h, nb)
			if err == altErr {
				require.Zero(t, h&1, "tie must go to even: f=%g", f)
			}
		}
	}
}

func TestSliceConversionsDoNotAllocate(t *testing.T) {
	src := make([]float32, 4096)
	for i := range src {
		src[i] = float32(math.Sin(float64(i)))
	}
	h := make([]uint16, len(src))
	back := make([]float32, len(src))
	b := make([]byte, 0, 2*len(src))
	allocs := testing.AllocsPerRun(20, func() {
		Float32ToFloat16(h, src)
		Float16ToFloat32(back, h)
		b = AppendFloat16LE(b[:0], src)
		DecodeFloat16LE(back, b)
	})
	assert.Zero(t, allocs)
	assert.Equal(t, len(src), Float32ToFloat16(h, src))
	assert.Equal(t, 2, Float32ToFloat16(h[:2], src), "converts min(len) elements")
	for i := range src {
		assert.InDelta(t, src[i], back[i], 1e-3)
	}
}

func BenchmarkFloat32ToFloat16(b *testing.B) {
	src := make([]float32, 17280*2)
	for i := range src {
		src[i] = float32(math.Sin(float64(i) * 0.01))
	}
	dst := make([]uint16, len(src))
	b.SetBytes(int64(4 * len(src)))
	for b.Loop() {
		Float32ToFloat16(dst, src)
	}
}
