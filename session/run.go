package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/demon-audio/demon/audio"
	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
)

// Controls are the knobs a client turns; the run loop reads them before each tick.
type Controls struct {
	Seed          int64
	Denoise       float32
	HintStrength  float32
	Shift         float32
	Guidance      float32
	RCFGMode      int // 0 off, 1 full, 2 initialize, 3 self
	CFGRescale    float32
	VelocityScale float32
	PromptBlend   float32
	Depth         int
	// ChannelGain scales each latent channel of the decoder input; inactive when all are 1.
	ChannelGain [64]float32
	// LoopStart and LoopEnd (seconds) arm a loop band when LoopEnd > LoopStart: while the
	// client's playhead is inside it, slices land inside it (see Session.aim).
	LoopStart, LoopEnd float64
}

// DefaultControls are a fresh session's knobs.
func DefaultControls(depth int) Controls {
	c := Controls{Denoise: 0.5, HintStrength: 1, Shift: 3, Guidance: 1, VelocityScale: 1, Depth: depth}
	for i := range c.ChannelGain {
		c.ChannelGain[i] = 1
	}
	return c
}

// SliceEvent is one decoded audio slice. Samples (interleaved stereo) are only valid
// during the Output call.
type SliceEvent struct {
	StartSample int64
	Samples     []float32
	TickMs      float32
	DecMs       float32
	NumGens     uint32
	Depth       int
	Controls    Controls
}

// Output receives a run loop's slices. An error stops the loop (the client is gone).
type Output interface {
	Slice(ev *SliceEvent) error
}

// RunnerInitError is a failure constructing the runner: a setup failure that propagates
// to the caller (warmup must see it).
type RunnerInitError struct{ Err error }

func (e *RunnerInitError) Error() string { return "runner init: " + e.Err.Error() }
func (e *RunnerInitError) Unwrap() error { return e.Err }

// RuntimeError is a failure of the running loop: logged, the session stops, and the
// client gets a pipeline_error frame.
type RuntimeError struct{ Err error }

func (e *RuntimeError) Error() string { return "generation stopped: " + e.Err.Error() }
func (e *RuntimeError) Unwrap() error { return e.Err }

// Session is a live streaming session.
type Session struct {
	ID          string
	StartedAt   time.Time
	Info        Info
	FixtureName string
	// Initial is the seam-faded playback buffer the client receives (interleaved stereo).
	Initial []float32
	// Stems, when requested: the stems, or the reason they failed (StemErr).
	Stems   *Stems
	StemErr error

	m   *Manager
	log *slog.Logger

	es     *engineSession
	stream *trt.Stream

	mu           sync.Mutex
	controls     Controls
	playhead     float64
	playheadAt   time.Time
	lastActivity time.Time
	prompt       [2]string
	key, meter   string

	cmds      chan command
	stopOnce  sync.Once
	stopCh    chan struct{}
	running   atomic.Bool
	runDone   chan struct{}
	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool
}

type command struct {
	fn   func(*Runtime) error
	done chan error
}

func newSession(m *Manager, req CreateRequest, es *engineSession, stream *trt.Stream, playback []float32, latents, depth int, log *slog.Logger) *Session {
	now := time.Now()
	s := &Session{
		ID: req.ID, StartedAt: now, FixtureName: req.FixtureName, Initial: playback,
		Info: Info{
			Duration: float64(len(playback)/2) / models.SampleRate, Channels: 2, SampleRate: models.SampleRate,
			Frames: len(playback) / 2, Latents: latents, MaxDepth: m.cfg.MaxDepth, Depth: depth, Profile: m.model.Profile.Name,
		},
		m: m, log: log, es: es, stream: stream,
		controls: DefaultControls(depth), lastActivity: now, playheadAt: now,
		prompt: [2]string{req.Prompt, req.PromptB}, key: req.Key, meter: req.TimeSignature,
		cmds: make(chan command, 64), stopCh: make(chan struct{}), runDone: make(chan struct{}),
	}
	if s.prompt[1] == "" {
		s.prompt[1] = s.prompt[0]
	}
	return s
}

// UpdateControls changes knobs (applied at the next tick) and counts as activity when
// they changed.
func (s *Session) UpdateControls(fn func(c *Controls)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	before := s.controls
	fn(&s.controls)
	if s.controls != before {
		s.lastActivity = time.Now()
	}
}

// Controls returns the current knobs.
func (s *Session) Controls() Controls {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.controls
}

// SetPlayhead records the client's playback position (seconds into the loop).
func (s *Session) SetPlayhead(pos float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.playhead, s.playheadAt = pos, time.Now()
}

// Touch marks client activity (resumes an idle-paused session).
func (s *Session) Touch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastActivity = time.Now()
}

// Snapshot describes the session for the control API.
func (s *Session) Snapshot() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]any{
		"prompt": s.prompt[0], "prompt_b": s.prompt[1], "prompt_blend": s.controls.PromptBlend,
		"duration": s.Info.Duration, "key": s.key, "time_signature": s.meter, "fixture_name": s.FixtureName,
		"channels": s.Info.Channels, "sample_rate": s.Info.SampleRate, "pipeline_depth": s.controls.Depth,
		"knob_values": map[string]any{"seed": s.controls.Seed, "denoise": s.controls.Denoise, "hint_strength": s.controls.HintStrength, "shift": s.controls.Shift},
	}
}

// Do runs fn on the run loop between ticks (GPU work is serialised there) and waits for
// it. Before Run starts, commands queue up; after Close they fail with ErrClosed.
func (s *Session) Do(ctx context.Context, fn func(*Runtime) error) error {
	c := command{fn: fn, done: make(chan error, 1)}
	select {
	case <-s.stopCh:
		return ErrClosed
	default:
	}
	select {
	case s.cmds <- c:
	case <-s.stopCh:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.done:
		return err
	case <-s.runDone:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop asks the run loop to end (it returns nil); Close still has to run.
func (s *Session) Stop() { s.stopOnce.Do(func() { close(s.stopCh) }) }

// Closed reports whether Close has completed.
func (s *Session) Closed() bool { return s.closed.Load() }

// Run is the session's run loop; once entered it is the sole owner of the session and
// closes it on return. Runner construction failures come back as *RunnerInitError,
// runtime failures as *RuntimeError; ctx ending or Stop returns nil. An idle session
// (Config.IdlePause) stops ticking the DiT but keeps delivering slices, re-decodes of its
// last latent (TickMs 0), for Config.IdleDecodeFor; then it sends nothing until the next
// input change.
func (s *Session) Run(ctx context.Context, out Output) (err error) {
	if !s.running.CompareAndSwap(false, true) {
		if s.closed.Load() {
			return ErrClosed
		}
		return errors.New("session already running")
	}
	defer close(s.runDone)
	defer func() { s.closeOnce.Do(s.teardown) }()

	if err := s.m.hit("run.runner_init"); err != nil {
		return &RunnerInitError{err}
	}
	var hb Heartbeat = nopHeartbeat{}
	if s.m.hooks.Heartbeat != nil {
		hb = s.m.hooks.Heartbeat("tick:" + s.ID)
	}
	defer hb.Close()
	r := &Runtime{s: s}
	slice := make([]float32, trt.MaxSliceFloats)
	params := &trt.TickParams{}
	ev := &SliceEvent{}
	var last time.Time
	// One timer for the pacing waits: time.After would allocate on every tick.
	pace := time.NewTimer(time.Hour)
	pace.Stop()
	defer pace.Stop()

	// The idle pause's stage 1 found no latent to re-decode (none emitted yet): none can
	// appear before the DiT runs again, so stop asking (each refusal builds an error).
	noLatent := false

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopCh:
			return nil
		case c := <-s.cmds:
			c.done <- c.fn(r)
			continue
		default:
		}
		hb.Beat() // in every stage: an idle session is alive, and the watchdog stays fed

		s.mu.Lock()
		ctl := s.controls
		stage := s.pauseStage(time.Since(s.lastActivity))
		reported := s.playhead
		pos := s.playhead + time.Since(s.playheadAt).Seconds()
		s.mu.Unlock()
		if stage == generating {
			noLatent = false
		}
		interval := s.m.cfg.TickInterval
		if stage == redecoding {
			interval = max(interval, redecodeInterval)
		}
		wait := interval - time.Since(last)
		if stage == paused || (stage == redecoding && noLatent) {
			wait = pausedPoll // nothing to run: only look for activity and commands
		}
		if wait > 0 {
			pace.Reset(wait)
			select {
			case <-ctx.Done():
				return nil
			case <-s.stopCh:
				return nil
			case c := <-s.cmds:
				c.done <- c.fn(r)
			case <-pace.C:
			}
			continue
		}
		last = time.Now()
		aim := s.aim(reported, pos, &ctl)

		if stage == redecoding {
			// No DiT, so no tick: neither the run.tick fault point nor the Tick hook (its
			// metrics are DiT ticks). A failing decode ends the loop as a failing tick does.
			res, err := s.stream.DecodeWindow(aim.playhead, nil, trt.SliceBuffers{F32: slice})
			if errors.Is(err, trt.ErrState) {
				noLatent = true
				continue
			}
			if err != nil {
				return &RuntimeError{err}
			}
			if err := deliver(out, ev, slice, &res, aim, &ctl); err != nil {
				return err
			}
			continue
		}

		if err := s.m.hit("run.tick"); err != nil {
			return &RuntimeError{err}
		}
		fillParams(params, &ctl, aim.playhead)
		res, err := s.stream.Tick(params, slice)
		if err != nil {
			return &RuntimeError{err}
		}
		if s.m.hooks.Tick != nil {
			s.m.hooks.Tick(float64(res.TickMs), float64(res.DecMs), res.Decoded)
		}
		if res.Decoded {
			if err := deliver(out, ev, slice, &res, aim, &ctl); err != nil {
				return err
			}
		}
	}
}

// The idle pause's pacing (DEMON's sleeps): stage 1 re-decodes at most every
// redecodeInterval (or TickInterval, if longer); a paused loop, or one with nothing to
// re-decode, looks for activity and commands every pausedPoll.
const (
	redecodeInterval = 20 * time.Millisecond
	pausedPoll       = 50 * time.Millisecond
)

// pauseStage is where the idle pause (protocol.md §4, lifecycle.md §6.3) has a session.
type pauseStage int

const (
	generating pauseStage = iota // active: DiT ticks
	redecoding                   // stage 1: no DiT; the last latent is re-decoded at the playhead
	paused                       // stage 2: neither DiT nor decoding
)

// pauseStage is the stage after sinceActivity without input changes (s.mu held: Info
// changes with a swap).
func (s *Session) pauseStage(sinceActivity time.Duration) pauseStage {
	cfg := &s.m.cfg
	if cfg.IdlePause <= 0 || sinceActivity <= cfg.IdlePause {
		return generating
	}
	redecodeFor := cfg.IdleDecodeFor
	if redecodeFor == 0 {
		redecodeFor = time.Duration(s.Info.Duration * float64(time.Second))
	}
	if sinceActivity <= cfg.IdlePause+redecodeFor {
		return redecoding
	}
	return paused
}

// deliver sends a decoded slice (of a tick or a re-decode; the stream wrote it to slice)
// to out, clamped at aim's band end.
func deliver(out Output, ev *SliceEvent, slice []float32, res *trt.TickResult, aim sliceAim, ctl *Controls) error {
	n := int64(res.NumSamples)
	if aim.clampEnd > 0 {
		n = min(n, aim.clampEnd-res.StartSample)
	}
	if n <= 0 {
		return nil
	}
	*ev = SliceEvent{StartSample: res.StartSample, Samples: slice[:2*n], TickMs: res.TickMs,
		DecMs: res.DecMs, NumGens: res.NumGens, Depth: res.Depth, Controls: *ctl}
	if err := out.Slice(ev); err != nil {
		return fmt.Errorf("deliver slice: %w", err)
	}
	return nil
}

// sliceAim is where a tick's slice goes: the playhead the stream targets (it decodes
// LeadS ahead of it) and, for a band shorter than a slice, the frame index the slice is
// clamped at (0: none).
type sliceAim struct {
	playhead float64
	clampEnd int64
}

// aim applies the loop band (protocol.md §4.3). While the client's reported playhead is
// inside an armed band [A, B) the client loops there, so the target (LeadS ahead of the
// extrapolated playhead) follows a sawtooth inside the band instead of running past B. A
// slice never crosses B: near B its window is shifted back to end at B, as the stream
// does at the buffer end, and the stretch after the wrap is patched by the next slices
// from A on. A band shorter than one slice pins the slice at A and clamps it at B; the
// part past B still patches the stream's own playback buffer (only its edge crossfades
// read it), but is never sent, so the client's copy outside the band is untouched.
// Without a band, or with the playhead outside it, the stream's own targeting stands.
func (s *Session) aim(reported, pos float64, c *Controls) sliceAim {
	a, b := c.LoopStart, c.LoopEnd
	frames, kept := s.Info.Latents, keptFrames(s.m.cfg.VAEWindow)
	if !(b > a) || reported < a || reported >= b || frames <= kept {
		return sliceAim{playhead: pos}
	}
	lead := float64(s.m.cfg.LeadS) // the float32 the stream adds
	target := a + math.Mod(pos+lead-a, b-a)
	first, end := int(a*models.FrameRate), min(int(b*models.FrameRate), frames)
	var ks int
	var clamp int64
	if end-first >= kept {
		ks = max(first, min(int(target*models.FrameRate), end-kept))
	} else {
		ks = min(first, frames-kept)
		clamp = min(int64(math.Round(b*models.SampleRate)), int64(frames)*models.Hop)
	}
	// Mid-frame, so the stream's floor lands on ks whatever the rounding of the sum.
	return sliceAim{playhead: (float64(ks)+0.5)/models.FrameRate - lead, clampEnd: clamp}
}

// keptFrames is the latent frames a windowed slice keeps: the VAE window clamped to
// [0.04, 0.36] s, as the shim's window planner does.
func keptFrames(vaeWindow float32) int {
	w := min(max(float64(vaeWindow), 0.04), 0.36)
	return max(1, min(int(w*models.FrameRate), 25))
}

func fillParams(p *trt.TickParams, c *Controls, playhead float64) {
	p.Submit = true
	p.Seed = c.Seed
	p.Denoise = c.Denoise
	p.PromptBlend = c.PromptBlend
	p.HintStrength = c.HintStrength
	p.Guidance = c.Guidance
	p.RCFGMode = c.RCFGMode
	p.CFGRescale = c.CFGRescale
	p.VelocityScale = c.VelocityScale
	p.Shift = c.Shift
	p.Depth = c.Depth
	p.PlayheadS = playhead
	p.Decode = true
	p.ChannelGain = c.ChannelGain
	p.ChannelGainActive = false
	for _, g := range c.ChannelGain {
		if g < 0.99 || g > 1.01 {
			p.ChannelGainActive = true
			break
		}
	}
}

type nopHeartbeat struct{}

func (nopHeartbeat) Beat()  {}
func (nopHeartbeat) Close() {}

// Close tears the session down; it is idempotent and safe from any goroutine. It stops
// accepting commands and waits for a running loop to quiesce before freeing device state:
// playback state, then the stream, then the engine session. A failing step is logged and
// the following steps still run.
func (s *Session) Close() error {
	if s == nil {
		return nil
	}
	s.Stop()
	if s.running.Load() {
		select {
		case <-s.runDone:
		case <-time.After(s.m.cfg.CloseTimeout):
			s.log.Error("run loop did not stop in time; leaving the session to it", "timeout", s.m.cfg.CloseTimeout)
			return fmt.Errorf("close session %s: run loop still busy", s.ID)
		}
	}
	s.closeOnce.Do(s.teardown)
	return s.closeErr
}

func (s *Session) teardown() {
	s.Stop()
	// Closed without ever running: no Run may start now, and Do waiters must not wait for
	// a run loop that will never exist.
	if s.running.CompareAndSwap(false, true) {
		defer close(s.runDone)
	}
	// Commands still queued will never run.
	for {
		select {
		case c := <-s.cmds:
			c.done <- ErrClosed
			continue
		default:
		}
		break
	}
	s.mu.Lock()
	s.Initial, s.Stems = nil, nil
	s.mu.Unlock()

	var first error
	for _, st := range []rollbackStep{
		{"stream", s.m.closeStep("close.stream", s.stream.Close)},
		{"engine session", s.m.closeStep("close.engine_session", s.es.Close)},
	} {
		if err := st.release(); err != nil {
			s.log.Error("session cleanup step failed", "resource", st.name, "err", err)
			if first == nil {
				first = err
			}
		}
	}
	s.closeErr = first
	s.m.Unregister(s.ID)
	s.m.untrack(s)
	s.closed.Store(true)
	if s.m.hooks.Ended != nil {
		s.m.hooks.Ended(s.ID)
	}
}

// Runtime is what commands see: the session's native state, on the run loop.
type Runtime struct{ s *Session }

// SetPrompt re-encodes prompt A (and B; empty B = A) and applies it from the next tick.
func (r *Runtime) SetPrompt(tags, tagsB, key, meter string) error {
	s := r.s
	if tagsB == "" {
		tagsB = tags
	}
	owner := "session:" + s.ID
	pa := trt.Prompt{Tags: tags, Key: key, TimeSignature: meter}
	pb := trt.Prompt{Tags: tagsB, Key: key, TimeSignature: meter}
	for _, c := range []struct {
		slot int
		p    trt.Prompt
		neg  bool
	}{{trt.CondPromptA, pa, false}, {trt.CondPromptB, pb, false}, {trt.CondNegative, pa, true}} {
		if err := encodePrompt(s.m.dev, s.m.model, owner, s.log, s.stream, c.slot, c.p, c.neg, s.m.cfg.MaxCondLen); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.prompt = [2]string{tags, tagsB}
	if key != "" {
		s.key = key
	}
	if meter != "" {
		s.meter = meter
	}
	s.lastActivity = time.Now()
	s.mu.Unlock()
	return nil
}

// Swap replaces the session's source with new audio: it is encoded, and the stream is
// reseeded (same length) or replaced by a new one (different length) only once the new one
// is complete, so a failed swap leaves the session streaming the old source. It returns
// the new seam-faded playback buffer (the client's new mirror).
func (r *Runtime) Swap(pcm []float32, channels int, fixtureName string) ([]float32, error) {
	s := r.s
	m := s.m
	owner := "session:" + s.ID
	st, err := stereo(pcm, channels)
	if err != nil {
		return nil, err
	}
	playback, _, err := audio.NormalizeSource(st, 2, audio.NormalizeOptions{CropSeconds: float64(m.model.Profile.DurationS)})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	latents := len(playback) / 2 / models.Hop
	moments, _, err := encodeSource(m.dev, m.model, owner, s.log, playback)
	if err != nil {
		return nil, err
	}
	defer func() { joinCleanup(s.log, "swap moments", moments.Close()) }()

	if latents == s.Info.Latents {
		if err := s.stream.SetSource(moments, latents); err != nil {
			return nil, err
		}
		if err := s.stream.SetPlayback(playback); err != nil {
			return nil, err
		}
	} else {
		next, err := trt.NewStream(s.es.decoderCtx, m.model.Engine(models.VAEDecodeWindowed), owner, trt.StreamOptions{
			Frames: latents, MaxDepth: m.cfg.MaxDepth, Depth: s.Controls().Depth, Steps: m.cfg.Steps, Shift: m.cfg.Shift,
			MaxCondLen: m.cfg.MaxCondLen, VAEWindow: m.cfg.VAEWindow, LeadS: m.cfg.LeadS,
		})
		if err != nil {
			return nil, err
		}
		old := s.stream
		s.stream = next // SetPrompt encodes into s.stream
		s.mu.Lock()
		tags, tagsB, key, meter := s.prompt[0], s.prompt[1], s.key, s.meter
		s.mu.Unlock()
		err = next.SetSource(moments, latents)
		if err == nil {
			err = r.SetPrompt(tags, tagsB, key, meter)
		}
		if err == nil {
			err = next.SetPlayback(playback)
		}
		if err != nil {
			s.stream = old
			joinCleanup(s.log, "swap stream", next.Close())
			return nil, err
		}
		joinCleanup(s.log, "previous stream", old.Close())
	}
	s.mu.Lock()
	s.Initial = playback
	s.Info.Frames = len(playback) / 2
	s.Info.Latents = latents
	s.Info.Duration = float64(s.Info.Frames) / models.SampleRate
	s.FixtureName = fixtureName
	s.playhead, s.playheadAt, s.lastActivity = 0, time.Now(), time.Now()
	s.controls.LoopStart, s.controls.LoopEnd = 0, 0 // the band belonged to the old source (§4.9)
	s.mu.Unlock()
	return playback, nil
}
