package audio

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"math/cmplx"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// demoHashes pins the amd64 output bit for bit (see the FMA note in demo.go).
var demoHashes = map[string]string{
	"demo_ambient_Am_20s.wav": "31d7a0a74530b28ab631b7c1287065106fa3ae0a70d13450ac2156e4ce1bacfb",
	"demo_groove_C_30s.wav":   "5ebfec9a10ae93cf9f6766203f7db7f4399bb09484764f536b9f64ab25e9ad19",
	"demo_pulse_Gm_60s.wav":   "6e934a06d35f02b24b02c06d4d5d2c3f3dc747f92bffb0ca98aac18f9f96a55f",
}

func hashSamples(s []float32) string {
	h := sha256.New()
	b := make([]byte, 0, 4*len(s))
	for _, f := range s {
		u := math.Float32bits(f)
		b = append(b, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
	}
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

func TestCatalogue(t *testing.T) {
	assert.Equal(t, []string{"demo_ambient_Am_20s.wav", "demo_groove_C_30s.wav", "demo_pulse_Gm_60s.wav"}, Catalogue())
	_, err := SynthesizeDemo("nope.wav")
	require.EqualError(t, err, `audio: unknown demo track "nope.wav" (have [demo_ambient_Am_20s.wav demo_groove_C_30s.wav demo_pulse_Gm_60s.wav])`)
}

func TestSynthesizeDemo(t *testing.T) {
	secs := map[string]int{"demo_ambient_Am_20s.wav": 20, "demo_groove_C_30s.wav": 30, "demo_pulse_Gm_60s.wav": 60}
	for _, name := range Catalogue() {
		t.Run(name, func(t *testing.T) {
			a, err := SynthesizeDemo(name)
			require.NoError(t, err)
			b, err := SynthesizeDemo(name)
			require.NoError(t, err)
			ha := hashSamples(a)
			require.Equal(t, ha, hashSamples(b), "deterministic")
			if want, ok := demoHashes[name]; ok && runtime.GOARCH == "amd64" {
				assert.Equal(t, want, ha, "golden hash")
			}
			t.Logf("%s sha256=%s", name, ha)

			frames := len(a) / 2
			require.Equal(t, secs[name]*SampleRate, frames)
			require.Zero(t, frames%PoolFrames, "multiple of 0.2 s")

			peak, sum := 0.0, 0.0
			for _, s := range a {
				require.False(t, math.IsNaN(float64(s)) || math.IsInf(float64(s), 0))
				peak = max(peak, math.Abs(float64(s)))
				sum += float64(s) * float64(s)
			}
			rms := math.Sqrt(sum / float64(len(a)))
			assert.LessOrEqual(t, peak, 0.9)
			assert.InDelta(t, DemoPeak, peak, 1e-6)
			assert.Greater(t, rms, 0.05, "not silent")

			// Not noise: spectral flatness (geometric / arithmetic mean of
			// the power spectrum) of the mono mix over several windows.
			flat := spectralFlatness(a, 8192, 8)
			t.Logf("rms=%.3f flatness=%.4f", rms, flat)
			assert.Less(t, flat, 0.1)

			// The stereo image is real: channels differ.
			diff := 0.0
			for i := 0; i < len(a); i += 2 {
				diff += math.Abs(float64(a[i] - a[i+1]))
			}
			assert.Greater(t, diff/float64(frames), 1e-3)

			// It survives normalisation.
			_, _, err = NormalizeSource(a, 2, NormalizeOptions{})
			require.NoError(t, err)
		})
	}
}

func TestSpectralFlatnessOfNoiseIsHigh(t *testing.T) {
	s := newSynth(SampleRate, 7)
	n := make([]float32, 2*SampleRate)
	for i := range n {
		n[i] = float32(s.noise())
	}
	assert.Greater(t, spectralFlatness(n, 8192, 4), 0.4)
}

func spectralFlatness(stereo []float32, size, windows int) float64 {
	frames := len(stereo) / 2
	hop := (frames - size) / windows
	total := 0.0
	for w := range windows {
		x := make([]complex128, size)
		for i := range size {
			j := w*hop + i
			hann := 0.5 - 0.5*math.Cos(2*math.Pi*float64(i)/float64(size-1))
			x[i] = complex(hann*float64(stereo[2*j]+stereo[2*j+1])/2, 0)
		}
		fft(x)
		logSum, sum := 0.0, 0.0
		bins := size / 2
		for k := 1; k <= bins; k++ {
			p := math.Pow(cmplx.Abs(x[k]), 2) + 1e-20
			logSum += math.Log(p)
			sum += p
		}
		total += math.Exp(logSum/float64(bins)) / (sum / float64(bins))
	}
	return total / float64(windows)
}

// fft is an in-place radix-2 Cooley–Tukey transform (len must be 2^k).
func fft(a []complex128) {
	n := len(a)
	for i, j := 1, 0; i < n; i++ {
		bit := n >> 1
		for ; j&bit != 0; bit >>= 1 {
			j ^= bit
		}
		j ^= bit
		if i < j {
			a[i], a[j] = a[j], a[i]
		}
	}
	for l := 2; l <= n; l <<= 1 {
		w := cmplx.Exp(complex(0, -2*math.Pi/float64(l)))
		for i := 0; i < n; i += l {
			wn := complex(1, 0)
			for k := range l / 2 {
				u, v := a[i+k], a[i+k+l/2]*wn
				a[i+k], a[i+k+l/2] = u+v, u-v
				wn *= w
			}
		}
	}
}
