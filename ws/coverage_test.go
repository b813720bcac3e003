package ws

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sliceCoverage reports a stretch of the track left unpatched between two consecutive
// slices when it is longer than one latent frame, as demon-bench counts underruns; a late
// slice with no gap, a jump back (loop wrap, seek) and a new track are not underruns.
func TestSliceCoverageReportsStaleGaps(t *testing.T) {
	const track = 480000 // 10 s at 48 kHz
	const slice = 17280  // 0.36 s
	type sent struct{ start, frames int }
	cases := []struct {
		name   string
		slices []sent
		want   []time.Duration
	}{
		{"overlapping slices", []sent{{0, slice}, {slice - 960, slice}, {2*slice - 960, slice}}, nil},
		{"back to back", []sent{{0, slice}, {slice, slice}}, nil},
		{"a gap of one latent frame is granularity", []sent{{0, slice}, {slice + 1920, slice}}, nil},
		{"a gap of one latent frame and a sample", []sent{{0, slice}, {slice + 1921, slice}}, []time.Duration{1921 * time.Second / 48000}},
		{"two gaps", []sent{{0, slice}, {48000, slice}, {96000, slice}},
			[]time.Duration{time.Second * (48000 - slice) / 48000, time.Second * (48000 - slice) / 48000}},
		{"gap across the loop end", []sent{{track - slice, slice}, {24000, slice}}, []time.Duration{time.Second / 2}},
		{"jump back (seek, loop band wrap)", []sent{{300000, slice}, {200000, slice}}, nil},
		{"the first slice has nothing before it", []sent{{240000, slice}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var gaps []time.Duration
			m, err := NewMirror(2, make([]float32, 2*track))
			require.NoError(t, err)
			c := &conn{s: &Server{opts: Options{Hooks: Hooks{StaleGap: func(d time.Duration) { gaps = append(gaps, d) }}}}, mirror: m}
			for _, s := range tc.slices {
				c.sliceCoverage(s.start, s.frames)
			}
			assert.Equal(t, tc.want, gaps)
		})
	}

	// A new track (a swap) starts over: no gap is measured against the old one.
	var gaps []time.Duration
	m, err := NewMirror(2, make([]float32, 2*track))
	require.NoError(t, err)
	c := &conn{s: &Server{opts: Options{Hooks: Hooks{StaleGap: func(d time.Duration) { gaps = append(gaps, d) }}}}, mirror: m}
	c.sliceCoverage(0, slice)
	require.NoError(t, m.Reset(2, make([]float32, 2*track/2)))
	c.sliceCoverage(100000, slice)
	c.sliceCoverage(100000+slice, slice)
	assert.Empty(t, gaps)
}
