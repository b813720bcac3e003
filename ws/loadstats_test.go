package ws

// coverage counts underruns in one session's slices, in arrival order, as demond's
// metric and demon-bench do (StaleGap); staleS is the total length of the stale stretches.
type coverage struct {
	trackFrames int
	prev        *sliceSpan
	underruns   int
	staleS      float64
}

func (c *coverage) add(s sliceSpan) {
	if c.prev != nil {
		if gap := StaleGap(c.prev.start, c.prev.end-c.prev.start, s.start, c.trackFrames); gap > 0 {
			c.underruns++
			c.staleS += float64(gap) / 48000
		}
	}
	c.prev = &s
}
