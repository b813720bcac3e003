package ws

import (
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// Figures the load test reports, with the benchmark harness's definitions
// (bench/stream.go, bench/proc.go); ws cannot import bench (bench imports
// ws).

// coverage counts underruns in one session's slices, in arrival order:
// consecutive slices that leave a stretch of the track (more than one
// latent frame, 40 ms) unpatched between the previous window's end and the
// next window's start, which the playhead then plays stale. staleS is the
// total length of those stretches. durationS is the track length.
type coverage struct {
	durationS float64
	prev      *sliceSpan
	underruns int
	staleS    float64
}

func (c *coverage) add(s sliceSpan) {
	if c.prev != nil && c.durationS > 0 {
		start, prevStart := float64(s.start)/48000, float64(c.prev.start)/48000
		d := math.Mod(start-prevStart, c.durationS)
		if d < 0 {
			d += c.durationS
		}
		if gap := d - float64(c.prev.end-c.prev.start)/48000; d < c.durationS/2 && gap > 0.04+1e-6 {
			c.underruns++
			c.staleS += gap
		}
	}
	c.prev = &s
}

// processRSS is this process's resident set size in bytes (0 if unknown).
func processRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

func TestCoverageCountsUnderruns(t *testing.T) {
	const w = 17280 // 0.36 s
	c := coverage{durationS: 10}
	for _, s := range []sliceSpan{
		{0, w}, {w, 2 * w}, // contiguous
		{2*w + 1920, 3*w + 1920}, // a 40 ms gap (one latent frame) is tolerated
		{4 * 48000, 4*48000 + w}, // skips 2.88 s ahead: underrun
		{2 * 48000, 2*48000 + w}, // back by 2 s (8 s ahead mod 10: more than half the track, not a gap)
		{6 * 48000, 6*48000 + w}, // skips 3.64 s: underrun
		{1920, 1920 + w},         // wraps past the end, 3.68 s left stale: underrun
	} {
		c.add(s)
	}
	assert.Equal(t, 3, c.underruns)
	assert.InDelta(t, 2.88+3.64+3.68, c.staleS, 1e-9)
}
