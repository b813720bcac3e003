package bench

import (
	"sync"

	"github.com/demon-audio/demon/session"
)

// sessionHooks optionally records every tick of every session on a manager.
type sessionHooks struct{ ticks *tickLog }

func (h sessionHooks) hooks() session.Hooks {
	if h.ticks == nil {
		return session.Hooks{}
	}
	return session.Hooks{Tick: h.ticks.add}
}

// tickLog collects tick and decode times (ms) reported by the run loops.
type tickLog struct {
	mu      sync.Mutex
	on      bool
	tick    []float64
	dec     []float64
	decoded int
}

func (t *tickLog) add(tickMs, decMs float64, decoded bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.on {
		return
	}
	t.tick = append(t.tick, tickMs)
	if decoded {
		t.decoded++
		t.dec = append(t.dec, decMs)
	}
}

// record starts (true) or stops (false) collecting.
func (t *tickLog) record(on bool) {
	t.mu.Lock()
	t.on = on
	t.mu.Unlock()
}

func (t *tickLog) snapshot() (tick, dec []float64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]float64(nil), t.tick...), append([]float64(nil), t.dec...)
}

// sessionHooksFunc is a manager's hooks with only Tick set.
func sessionHooksFunc(tick func(tickMs, decMs float64, decoded bool)) session.Hooks {
	return session.Hooks{Tick: tick}
}

// discardOutput drops slices.
type discardOutput struct{}

func (discardOutput) Slice(*session.SliceEvent) error { return nil }
