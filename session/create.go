package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/demon-audio/demon/audio"
	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
)

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// CreateRequest describes a session to start.
type CreateRequest struct {
	// ID is the session id (NewID when empty); it is also the ledger owner tag suffix.
	ID string
	// PCM is interleaved source audio at 48 kHz with Channels channels (mono is upmixed).
	PCM      []float32
	Channels int
	// FixtureName labels the source (echoed in stem messages).
	FixtureName string
	// CropSeconds, if > 0, crops the source.
	CropSeconds float64
	// Prompt, PromptB: tags A and B (B defaults to A).
	Prompt, PromptB    string
	Key, TimeSignature string
	// Depth is the initial ring depth (clamped to [1, MaxDepth]).
	Depth int
	// StemMode: "" (none), "full" (extract, non-fatal), "vocals" or "instruments" (the
	// selected stem becomes the source; failure is fatal).
	StemMode string
}

// Info is what the ready frame tells the client.
type Info struct {
	Duration   float64
	Channels   int
	SampleRate int
	Frames     int // playback frames (samples per channel)
	Latents    int // latent frames T
	MaxDepth   int
	Depth      int
	Profile    string
}

// Create starts a session transactionally: every resource acquired is released if a later
// step fails, in reverse order, and the original error is returned (wrapped in a
// StageError naming the stage). On success the caller owns the session: it must either
// hand it to Run or Close it.
func (m *Manager) Create(ctx context.Context, req CreateRequest) (s *Session, err error) {
	start := time.Now()
	m.createMu.Lock()
	defer m.createMu.Unlock()
	defer func() {
		if err != nil && m.hooks.Failed != nil && !errors.Is(err, ErrAdmission) && !errors.Is(err, ErrShuttingDown) &&
			!errors.Is(err, errAdmissionAbandoned) {
			m.hooks.Failed(err)
		}
	}()
	m.mu.Lock()
	draining := m.draining
	m.mu.Unlock()
	if draining {
		return nil, ErrShuttingDown
	}
	if req.ID == "" {
		req.ID = NewID()
	}
	owner := "session:" + req.ID
	log := m.log.With("session", req.ID)

	// Source normalisation (host only) and admission, before any device allocation.
	pcm, err := stereo(req.PCM, req.Channels)
	if err != nil {
		return nil, stageErr("create.source_prepare", err)
	}
	maxS := float64(m.model.Profile.DurationS)
	crop := req.CropSeconds
	if crop <= 0 || crop > maxS {
		crop = maxS
	}
	playback, _, err := audio.NormalizeSource(pcm, 2, audio.NormalizeOptions{CropSeconds: crop})
	if err != nil {
		return nil, stageErr("create.source_prepare", fmt.Errorf("%w: %v", ErrBadRequest, err))
	}
	frames := len(playback) / 2
	latents := frames / models.Hop
	wantStems := req.StemMode != ""
	switch req.StemMode {
	case "", "full", "vocals", "instruments":
	default:
		return nil, stageErr("create.source_prepare", fmt.Errorf("%w: stem_source_mode %q", ErrBadRequest, req.StemMode))
	}
	if !m.cfg.NoAdmission {
		if err := m.admit(ctx, log, m.predictCost(latents, wantStems)); err != nil {
			if errors.Is(err, ErrAdmission) && m.hooks.Refused != nil {
				m.hooks.Refused()
			}
			return nil, err
		}
	}

	rb := &rollback{log: log}
	defer func() { rb.run(err) }()

	// Source preparation: VAE encode (and stems, when asked).
	if err := m.hit("create.source_prepare"); err != nil {
		return nil, err
	}
	var stems *Stems
	var stemErr error
	if wantStems {
		if err := m.hit("create.stems"); err != nil {
			stemErr = err
		} else {
			stems, stemErr = separateStems(m.dev, m.model, owner, log, playback)
		}
		if stemErr != nil && req.StemMode != "full" {
			return nil, stageErr("create.stems", fmt.Errorf("stem extraction failed: %w", stemErr))
		}
		if stemErr != nil {
			log.Warn("stem extraction failed; continuing without stems", "err", stemErr)
		}
		if stems != nil && req.StemMode != "full" {
			sel := stems.Vocals
			if req.StemMode == "instruments" {
				sel = stems.Instruments
			}
			playback = append([]float32(nil), sel...)
			audio.SeamFade(playback, 2)
		}
	}
	moments, _, err := encodeSource(m.dev, m.model, owner, log, playback)
	if err != nil {
		return nil, stageErr("create.source_prepare", err)
	}
	// Transient: only needed to seed the stream; freed when create returns either way.
	defer func() { joinCleanup(log, "source moments", moments.Close()) }()

	// The session's share of the model: a reference and its decoder context.
	es, err := newEngineSession(m.model, owner)
	if err != nil {
		return nil, stageErr("session.init", err)
	}
	rb.push("engine session", m.closeStep("close.engine_session", es.Close))

	// The stream, then its source and conditioning.
	if err := m.hit("create.stream"); err != nil {
		return nil, err
	}
	depth := min(max(req.Depth, 1), m.cfg.MaxDepth)
	if req.Depth == 0 {
		depth = min(4, m.cfg.MaxDepth)
	}
	stream, err := trt.NewStream(es.decoderCtx, m.model.Engine(models.VAEDecodeWindowed), owner, trt.StreamOptions{
		Frames: latents, MaxDepth: m.cfg.MaxDepth, Depth: depth, Steps: m.cfg.Steps, Shift: m.cfg.Shift,
		MaxCondLen: m.cfg.MaxCondLen, VAEWindow: m.cfg.VAEWindow, LeadS: m.cfg.LeadS,
	})
	if err != nil {
		return nil, stageErr("create.stream", err)
	}
	rb.push("stream", m.closeStep("close.stream", stream.Close))
	if err := stream.SetSource(moments, latents); err != nil {
		return nil, stageErr("create.stream", err)
	}

	if err := m.hit("create.conditioning"); err != nil {
		return nil, err
	}
	promptB := req.PromptB
	if promptB == "" {
		promptB = req.Prompt
	}
	pa := trt.Prompt{Tags: req.Prompt, Key: req.Key, TimeSignature: req.TimeSignature}
	pb := trt.Prompt{Tags: promptB, Key: req.Key, TimeSignature: req.TimeSignature}
	for _, c := range []struct {
		slot int
		p    trt.Prompt
		neg  bool
	}{{trt.CondPromptA, pa, false}, {trt.CondPromptB, pb, false}, {trt.CondNegative, pa, true}} {
		if err := encodePrompt(m.dev, m.model, owner, log, stream, c.slot, c.p, c.neg, m.cfg.MaxCondLen); err != nil {
			return nil, stageErr("create.conditioning", err)
		}
	}

	if err := m.hit("create.playback"); err != nil {
		return nil, err
	}
	if err := stream.SetPlayback(playback); err != nil {
		return nil, stageErr("create.playback", err)
	}

	if err := m.hit("create.finalize"); err != nil {
		return nil, err
	}
	s = newSession(m, req, es, stream, playback, latents, depth, log)
	s.Stems, s.StemErr = stems, stemErr
	rb.commit() // ownership of the engine session and stream passes to s
	m.track(s)
	if m.hooks.Started != nil {
		m.hooks.Started(s.ID, time.Since(start))
	}
	return s, nil
}

// errAdmissionAbandoned marks a create whose caller gave up (ctx ended) while admission
// waited for the driver: neither a refusal nor a failed start.
var errAdmissionAbandoned = errors.New("session admission abandoned while waiting for the driver's memory")

// admit decides whether a session predicted to need cost device bytes may start, before
// anything is allocated: ErrAdmission (wrapped, with the figures) when it may not. The
// ledger decides first: cost plus Headroom must fit in what it has not handed out. On a
// GPU the driver must agree too, because its free memory (cuMemGetInfo) can be less: the
// CUDA context and other processes hold memory the ledger does not see, and frees land
// asynchronously (a session that has just closed gets its memory back at stream sync).
// admit then polls the driver until cost plus Headroom fit, for at most DriverWait. Creates
// are serialised, so the wait is what lets a session start right after the previous one
// closed; when the driver never agrees, the start is refused like any other.
func (m *Manager) admit(ctx context.Context, log *slog.Logger, cost uint64) error {
	tot, err := m.dev.Totals()
	if err != nil {
		return err
	}
	need := cost + m.cfg.Headroom
	if need > tot.FreeBytes() {
		return describeAdmission(cost, tot.FreeBytes(), m.cfg.Headroom)
	}
	if m.dev.Kind() != trt.DeviceCUDA {
		return nil
	}
	free, _, err := m.dev.DriverMemory()
	if err != nil {
		return err
	}
	if free >= need {
		return nil
	}
	start := time.Now()
	free, err = trt.WaitDriverMemory(ctx, m.dev, need, 0, m.cfg.DriverWait)
	waited := time.Since(start)
	var devErr *trt.Error
	switch {
	case err == nil:
		log.Info("admission waited for the driver's memory", "waited_ms", waited.Milliseconds(),
			"driver_free", human(free), "need", human(need))
		return nil
	case errors.As(err, &devErr):
		return err // the driver could not be asked
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", errAdmissionAbandoned, ctx.Err())
	}
	return fmt.Errorf("%w: a session needs %s and %s must stay free; the ledger has %s free but the driver "+
		"reports %s after waiting %v (frees may still be in flight, or other processes hold the memory)",
		ErrAdmission, human(cost), human(m.cfg.Headroom), human(tot.FreeBytes()), human(free), m.cfg.DriverWait)
}

// stereo upmixes mono and keeps the first two channels.
func stereo(pcm []float32, channels int) ([]float32, error) {
	switch {
	case channels < 1:
		return nil, fmt.Errorf("%w: %d channels", ErrBadRequest, channels)
	case len(pcm)%channels != 0:
		return nil, fmt.Errorf("%w: %d samples is not a whole number of %d-channel frames", ErrBadRequest, len(pcm), channels)
	}
	return audio.Clip{SampleRate: audio.SampleRate, Channels: channels, Samples: pcm}.Stereo().Samples, nil
}
