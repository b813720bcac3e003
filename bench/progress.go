package bench

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress is a one-line carriage-return progress bar on stderr (nil writer: silent).
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	label string
	total int
	start time.Time
	last  time.Time
}

func newProgress(w io.Writer, label string, total int) *progress {
	p := &progress{w: w, label: label, total: max(total, 1), start: time.Now()}
	p.Set(0)
	return p
}

// Set draws the bar at done of total (throttled to 10 Hz except at the ends).
func (p *progress) Set(done int) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if done != 0 && done < p.total && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	const width = 30
	frac := min(float64(done)/float64(p.total), 1)
	n := int(frac * width)
	el := now.Sub(p.start).Round(100 * time.Millisecond)
	fmt.Fprintf(p.w, "\r%-8s [%s%s] %3.0f%% %d/%d %s   ", p.label, strings.Repeat("#", n), strings.Repeat(".", width-n), 100*frac, done, p.total, el)
}

// Done finishes the line.
func (p *progress) Done() {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	p.last = time.Time{}
	p.mu.Unlock()
	p.Set(p.total)
	p.mu.Lock()
	fmt.Fprintln(p.w)
	p.mu.Unlock()
}
