package audio

import (
	"errors"
	"fmt"
	"math"
)

// Source normalisation, exactly the steps of protocol.md §3.2. The result is
// the server's playback buffer: it is echoed to the client as the initial
// buffer and it is the basis of the delta mirror.

const (
	// LatentFrameSamples is the number of audio frames per latent frame
	// (25 latent frames per second).
	LatentFrameSamples = 1920
	// PoolFrames is the source alignment: 0.2 s = 5 latent frames.
	PoolFrames = 9600
	// MaxSourceSeconds is the longest source the engines accept.
	MaxSourceSeconds = 240
	// MaxSourceFrames is MaxSourceSeconds in frames.
	MaxSourceFrames = MaxSourceSeconds * SampleRate
	// MinLatentFrames is the shortest engine sequence (seq_min, engine.md §3).
	MinLatentFrames = 126
	// MinSourceFrames is the shortest playable source: 126 latent frames,
	// 241920 frames, 5.04 s. After flooring to PoolFrames a playable source
	// therefore has at least 259200 frames (5.4 s).
	MinSourceFrames = MinLatentFrames * LatentFrameSamples
	// SeamFadeFrames is the maximum loop-seam crossfade, 50 ms.
	SeamFadeFrames = 2400
)

// ErrSourceTooShort reports a source below MinSourceFrames after
// normalisation. Errors wrapping it carry the actual length.
var ErrSourceTooShort = errors.New("audio: source too short")

// ErrInvalidSource reports a malformed source (no channels, ragged frames).
var ErrInvalidSource = errors.New("audio: invalid source")

// NormalizeOptions are the session-config inputs to normalisation.
type NormalizeOptions struct {
	// CropSeconds, if > 0, crops the buffer to this length. demon floors
	// the cropped length to PoolFrames as well, so the buffer stays
	// latent-aligned (a crop longer than the source is a no-op).
	CropSeconds float64
}

// NormalizeSource turns client or disk PCM (interleaved, channels ≥ 1, any
// length) into the playback buffer:
//
//  1. keep at most two channels (mono stays mono);
//  2. truncate to MaxSourceFrames;
//  3. floor to a multiple of PoolFrames;
//  4. crop to opts.CropSeconds if > 0 (floored to PoolFrames);
//  5. seam fade: with L = min(SeamFadeFrames, N/4), overwrite the last L
//     frames with tail·(1−w) + head·w, w = i/(L−1) for i in [0, L)
//     (numpy linspace(0, 1, L)), so the loop wraps smoothly.
//
// NaN and ±Inf samples are replaced by 0 before anything else, so they can
// never reach the delta mirror. A result shorter than MinSourceFrames fails
// with an error wrapping ErrSourceTooShort. The input is never modified; the
// result is a new slice with outChannels channels.
func NormalizeSource(pcm []float32, channels int, opts NormalizeOptions) (out []float32, outChannels int, err error) {
	if channels < 1 {
		return nil, 0, fmt.Errorf("%w: %d channels", ErrInvalidSource, channels)
	}
	if len(pcm)%channels != 0 {
		return nil, 0, fmt.Errorf("%w: %d samples is not a whole number of %d-channel frames", ErrInvalidSource, len(pcm), channels)
	}
	frames := len(pcm) / channels
	outChannels = min(channels, 2)

	n := min(frames, MaxSourceFrames)
	n -= n % PoolFrames
	if opts.CropSeconds > 0 && !math.IsInf(opts.CropSeconds, 1) {
		c := int(math.Floor(opts.CropSeconds * SampleRate))
		c -= c % PoolFrames
		n = min(n, c)
	}
	if n < MinSourceFrames {
		return nil, 0, fmt.Errorf("%w: %.2f s usable after normalisation (%d frames); need at least %.2f s (%d latent frames)",
			ErrSourceTooShort, float64(max(n, 0))/SampleRate, max(n, 0), float64(MinSourceFrames)/SampleRate, MinLatentFrames)
	}

	out = make([]float32, n*outChannels)
	for i := range n {
		for c := range outChannels {
			s := pcm[i*channels+c]
			if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
				s = 0
			}
			out[i*outChannels+c] = s
		}
	}
	SeamFade(out, outChannels)
	return out, outChannels, nil
}

// SeamFade applies step 5 of NormalizeSource in place to an interleaved
// buffer with the given channel count.
func SeamFade(buf []float32, channels int) {
	if channels < 1 {
		return
	}
	n := len(buf) / channels
	l := min(SeamFadeFrames, n/4)
	if l < 1 {
		return
	}
	tail := (n - l) * channels
	for i := range l {
		w := float32(1)
		if l > 1 {
			w = float32(float64(i) / float64(l-1))
		}
		for c := range channels {
			t := buf[tail+i*channels+c]
			h := buf[i*channels+c]
			buf[tail+i*channels+c] = t*(1-w) + h*w
		}
	}
}
