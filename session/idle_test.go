package session_test

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/session"
)

// The idle pause (protocol.md §4, lifecycle.md §6.3): after IdlePause without input changes
// the DiT stops and the last latent is re-decoded at the playhead for IdleDecodeFor (stage
// 1), then slices stop (stage 2); a change resumes the DiT.

// idleSlice is one slice as the idle tests see it.
type idleSlice struct {
	at      time.Time
	start   int64 // frame index
	tickMs  float32
	numGens uint32
	ticks   int64 // DiT ticks run before it (the Tick hook's count)
}

// redecode reports whether the slice came from a re-decode, not a DiT tick.
func (s idleSlice) redecode() bool { return s.tickMs == 0 }

// idleRecorder records slices and DiT ticks; it is the session's Output and Tick hook.
type idleRecorder struct {
	ticks  atomic.Int64
	mu     sync.Mutex
	slices []idleSlice
}

func (r *idleRecorder) hooks() session.Hooks {
	return session.Hooks{Tick: func(float64, float64, bool) { r.ticks.Add(1) }}
}

func (r *idleRecorder) Slice(ev *session.SliceEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slices = append(r.slices, idleSlice{at: time.Now(), start: ev.StartSample, tickMs: ev.TickMs, numGens: ev.NumGens, ticks: r.ticks.Load()})
	return nil
}

func (r *idleRecorder) snapshot() []idleSlice {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]idleSlice(nil), r.slices...)
}

// waitSlice waits up to d for a slice after `after` that ok accepts.
func (r *idleRecorder) waitSlice(after time.Time, d time.Duration, ok func(idleSlice) bool) (idleSlice, bool) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, s := range r.snapshot() {
			if s.at.After(after) && ok(s) {
				return s, true
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return idleSlice{}, false
}

// idleSession starts a session on a manager with the idle pause given and runs it on a
// goroutine; the returned function stops it and returns Run's error.
func idleSession(t *testing.T, r *rig, rec *idleRecorder, idle, redecodeFor time.Duration, beforeRun func(*session.Session)) (*session.Session, func() error) {
	t.Helper()
	cfg := session.DefaultConfig()
	cfg.TickInterval = 5 * time.Millisecond
	cfg.MaxCondLen = 128
	cfg.IdlePause, cfg.IdleDecodeFor = idle, redecodeFor
	mgr := session.NewManager(cfg, r.dev, r.model, r.faults, nil, rec.hooks())
	s, err := mgr.Create(t.Context(), request(""))
	require.NoError(t, err)
	beforeRun(s)
	done := make(chan error, 1)
	go func() { done <- s.Run(t.Context(), rec) }()
	return s, func() error {
		s.Stop()
		return <-done
	}
}

// TestIdlePauseRedecodesThenStops: stage 1 keeps slices coming, all re-decodes of the last
// latent (no DiT tick, TickMs 0, the same generation count) following the playhead; stage
// 2 sends nothing; a changed knob resumes DiT ticks at once.
func TestIdlePauseRedecodesThenStops(t *testing.T) {
	const idle, redecodeFor = 300 * time.Millisecond, 600 * time.Millisecond
	const slack = 250 * time.Millisecond // one decode and its delivery, under load
	r := newRig(t, 24<<30, "")
	rec := &idleRecorder{}
	var from, to time.Time // the last activity lies between them
	s, stop := idleSession(t, r, rec, idle, redecodeFor, func(s *session.Session) {
		from = time.Now()
		s.SetPlayhead(0)
		s.Touch()
		to = time.Now()
	})
	stage2 := to.Add(idle + redecodeFor + slack)
	time.Sleep(time.Until(stage2.Add(400 * time.Millisecond))) // some of stage 2
	ticksAtResume := rec.ticks.Load()
	resumeAt := time.Now()
	s.UpdateControls(func(c *session.Controls) { c.Denoise = 0.7 })
	resumed, ok := rec.waitSlice(resumeAt, 2*time.Second, func(s idleSlice) bool { return !s.redecode() })
	require.True(t, ok, "a changed knob resumes the DiT")
	require.NoError(t, stop())

	var dit, redecodes []idleSlice
	for _, sl := range rec.snapshot() {
		if sl.at.After(resumeAt) {
			break
		}
		if sl.redecode() {
			redecodes = append(redecodes, sl)
		} else {
			require.Empty(t, redecodes, "a DiT slice at %v, during the idle pause", sl.at.Sub(from))
			dit = append(dit, sl)
		}
	}
	require.NotEmpty(t, dit, "DiT slices before the pause")
	require.GreaterOrEqual(t, len(redecodes), 5, "stage 1 keeps slices coming")
	first, last := redecodes[0], redecodes[len(redecodes)-1]
	assert.False(t, first.at.Before(from.Add(idle)), "re-decodes start only after IdlePause")
	assert.False(t, last.at.After(stage2), "re-decodes stop after IdleDecodeFor (stage 2)")
	assert.GreaterOrEqual(t, last.at.Sub(first.at), redecodeFor/2, "re-decodes continue through stage 1")
	lastDiT := dit[len(dit)-1]
	prev := first.start
	for _, sl := range redecodes {
		assert.Equal(t, first.ticks, sl.ticks, "no DiT tick during stage 1")
		assert.Equal(t, lastDiT.numGens, sl.numGens, "the last latent, re-decoded")
		assert.GreaterOrEqual(t, sl.start, prev, "re-decodes follow the playhead")
		prev = sl.start
		// The window starts at the latent frame of playhead + lead (0.5 s), the playhead
		// moving in wall time from 0 at `from`; it was decoded a little before delivery.
		frame := sl.start / models.Hop
		atDelivery := int64(math.Floor((sl.at.Sub(from).Seconds() + 0.5) * models.FrameRate))
		assert.LessOrEqual(t, frame, atDelivery, "slice at %v", sl.at.Sub(from))
		assert.GreaterOrEqual(t, frame, atDelivery-int64(slack.Seconds()*models.FrameRate), "slice at %v", sl.at.Sub(from))
	}
	assert.Greater(t, last.start, first.start, "re-decodes follow the playhead")
	assert.Equal(t, first.ticks, ticksAtResume, "no DiT tick in either stage")
	assert.Greater(t, resumed.ticks, ticksAtResume)
	assert.Less(t, resumed.at.Sub(resumeAt), time.Second, "resumes promptly")
	t.Logf("%d DiT slices, then %d re-decodes from %v to %v after the last activity; resumed %v after the change",
		len(dit), len(redecodes), first.at.Sub(to).Round(time.Millisecond), last.at.Sub(to).Round(time.Millisecond),
		resumed.at.Sub(resumeAt).Round(time.Millisecond))
}

// TestIdlePauseBeforeAnyLatent: a session idle before its DiT emitted anything has nothing
// to re-decode: stage 1 waits without error or slices. Once the DiT ran, the next idle
// pause re-decodes.
func TestIdlePauseBeforeAnyLatent(t *testing.T) {
	const idle = 100 * time.Millisecond
	r := newRig(t, 24<<30, "")
	rec := &idleRecorder{}
	s, stop := idleSession(t, r, rec, idle, time.Minute, func(*session.Session) {
		time.Sleep(idle + 50*time.Millisecond) // idle (stage 1) from the loop's first iteration
	})
	time.Sleep(300 * time.Millisecond)
	assert.Empty(t, rec.snapshot(), "no slices without a latent")
	assert.Zero(t, rec.ticks.Load(), "no DiT tick while idle")

	resumeAt := time.Now()
	s.UpdateControls(func(c *session.Controls) { c.Denoise = 0.7 })
	_, ok := rec.waitSlice(resumeAt, 2*time.Second, func(s idleSlice) bool { return !s.redecode() })
	require.True(t, ok, "a changed knob starts the DiT")
	_, ok = rec.waitSlice(resumeAt, 2*time.Second, idleSlice.redecode)
	assert.True(t, ok, "idle again, with a latent to re-decode")
	require.NoError(t, stop())
}

// Stage 1 of the idle pause allocates nothing per re-decode and makes one cgo call each.
func TestRunLoopRedecodeAllocations(t *testing.T) {
	r := newRig(t, 24<<30, "")
	meter := &loopMeter{from: 10, to: 60}
	cfg := session.DefaultConfig()
	cfg.TickInterval = time.Millisecond
	cfg.MaxCondLen = 128
	cfg.IdlePause, cfg.IdleDecodeFor = 100*time.Millisecond, time.Minute
	mgr := session.NewManager(cfg, r.dev, r.model, r.faults, nil, session.Hooks{})
	s, err := mgr.Create(t.Context(), request(""))
	require.NoError(t, err)
	meter.s = s
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // the meter stops it well before
	defer cancel()
	require.NoError(t, s.Run(ctx, redecodeCounter(meter.count)))
	perDecode, cgo := meter.perEvent(t)
	t.Logf("idle stage 1: %.2f Go allocations and %.2f cgo calls per re-decode over %d", perDecode, cgo, meter.to-meter.from)
	if !asanBuild {
		assert.Less(t, perDecode, 0.5, "re-decodes allocate nothing (ReadMemStats itself may count once)")
	}
	assert.InDelta(t, 1.0, cgo, 0.021, "one cgo call per re-decode")
}

// redecodeCounter is an Output that calls its function for each re-decoded slice.
type redecodeCounter func()

func (f redecodeCounter) Slice(ev *session.SliceEvent) error {
	if ev.TickMs == 0 {
		f()
	}
	return nil
}
