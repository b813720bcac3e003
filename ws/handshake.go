package ws

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/demon-audio/demon/audio"
	"github.com/demon-audio/demon/session"
	"github.com/gorilla/websocket"
)

// The session socket: handshake (protocol.md §3), the handshake guard
// (lifecycle.md L4), then the run loop.
//
// Ownership of the session:
//   - Manager.Create is transactional: on error it has released everything.
//   - From Create returning until Run is called, the deferred handshake
//     guard in runSession owns it: on any exit it unregisters the session
//     (if registered) and closes it. Two explicit flags decide: registered
//     (set right after Register) and enteredRun (set immediately before Run).
//   - Once Run is called, Run is the sole owner and closes the session before
//     it returns.
//
// Either way the session is closed before runSession returns, and finish
// sends the error frame and the close frame only after that: a client that
// retries on the close can never race the teardown (lifecycle §3).
//
// Handshake fault points (trt.Faults, docs/faultpoints.md):
//   - handshake.ready: before the ready frame;
//   - handshake.initial_buffer: between ready and the initial buffer;
//   - handshake.stem_payload: hit twice when stems are sent: hit 1 before the
//     stem_assets header (or stem_failed), hit 2 between the first (vocals)
//     and the second (instruments) stem binary. Arm it with "=error@1" for
//     the incident's variant (a) and "=error@2" for variant (b);
//   - handshake.after_register: after Register, before Run.

// runSession runs a session socket up to the point where only the close is
// left to send.
func (c *conn) runSession(first []byte) (out outcome) {
	mgr := c.s.mgr
	if mgr == nil {
		return startFailure(Error{Code: CodeNoBackend, Message: "ui-only mode (no generative backend)"}, websocket.CloseInternalServerErr)
	}
	cfg, err := ParseSessionConfig(first)
	if err != nil {
		c.logger().Info("bad session config", "err", err)
		return startFailure(Error{Code: CodeBadConfig, Message: err.Error()}, websocket.CloseInternalServerErr)
	}
	c.enc = cfg.SliceEncoding
	c.prompt = cfg.Prompt
	c.setLogger(c.logger().With("fixture", cfg.FixtureName))

	// The source: a server-side track, or the PCM frame that follows.
	var pcm []float32
	channels := 2
	builtin := slices.Contains(c.s.fixtures.Names(), cfg.FixtureName)
	if cfg.UseServerFixture {
		if pcm, err = c.s.loadServerSource(cfg.FixtureName); err != nil {
			c.logger().Info("server fixture refused", "err", err)
			return startFailure(Error{Code: CodeBadSource, Message: fmt.Sprintf("server fixture %q: %v", cfg.FixtureName, err)}, websocket.CloseInternalServerErr)
		}
	} else {
		var o *outcome
		channels, pcm, o = c.readStartPCM()
		if o != nil {
			return *o
		}
	}
	// DEMON's auto rule: stems ("full") for anything but a built-in fixture.
	stemMode := cfg.StemSourceMode
	if stemMode == "" && !builtin {
		stemMode = StemFull
	}

	// From here the reader runs, so a client that vanishes is noticed even
	// while Create is busy.
	c.startReader()
	c.s.waitTeardowns(c.ctx)
	if c.cause() != nil {
		return c.endedOutcome()
	}
	if h := c.s.testHookBeforeCreate; h != nil {
		h(c)
	}
	t0 := time.Now()
	sess, err := mgr.Create(c.ctx, session.CreateRequest{
		PCM: pcm, Channels: channels, FixtureName: cfg.FixtureName, CropSeconds: cfg.Crop,
		Prompt: cfg.Prompt, PromptB: cfg.PromptB, Key: cfg.Key, TimeSignature: cfg.TimeSignature,
		Depth: cfg.Depth, StemMode: stemMode,
	})
	pcm = nil
	if err != nil {
		return c.createFailed(err)
	}
	log := c.logger().With("session", sess.ID)
	c.setLogger(log)
	log.Info("session created", "frames", sess.Info.Frames, "stems", stemMode, "create_ms", time.Since(t0).Milliseconds())

	// The handshake guard (L4).
	registered, enteredRun := false, false
	c.setSession(sess)
	defer func() {
		if enteredRun {
			return
		}
		if c.s.disableHandshakeGuard {
			log.Warn("handshake guard disabled (test only): leaving the failed session open")
			c.sessionReleased()
			return
		}
		if registered {
			mgr.Unregister(sess.ID)
		}
		if err := sess.Close(); err != nil {
			log.Error("closing the session after a failed handshake", "err", err)
		}
		c.sessionReleased()
	}()

	if err := c.handshake(mgr, sess, cfg, stemMode, &registered); err != nil {
		return c.handshakeFailed(err)
	}
	if c.cause() != nil {
		return c.endedOutcome()
	}

	c.startWriter()
	c.startReplay(sess)
	enteredRun = true
	runErr := sess.Run(c.ctx, &output{c: c})
	// Run has closed the session.
	c.sessionReleased()
	return c.runEnded(runErr)
}

// handshake sends ready, the initial buffer and the stem payload, then
// registers the session.
func (c *conn) handshake(mgr *session.Manager, sess *session.Session, cfg SessionConfig, stemMode string, registered *bool) error {
	faults := mgr.Faults()
	// step passes a handshake fault point; a failure there is reported with the point as
	// its window, whatever its kind (an injected error or out of memory).
	step := func(point string) error {
		if err := c.cause(); err != nil {
			return err
		}
		if err := faults.Hit(point); err != nil {
			return &session.StageError{Stage: point, Err: err}
		}
		return nil
	}

	maxDepth := sess.Info.MaxDepth
	ready := Ready{
		Channels: sess.Info.Channels, Duration: sess.Info.Duration, SampleRate: sess.Info.SampleRate,
		Checkpoint: sess.Info.Profile, PipelineDepth: sess.Info.Depth, MaxPipelineDepth: &maxDepth,
		SessionID: sess.ID, Key: optString(cfg.Key), TimeSignature: optString(cfg.TimeSignature),
	}
	if err := step("handshake.ready"); err != nil {
		return err
	}
	m, err := NewMirror(sess.Info.Channels, sess.Initial)
	if err != nil {
		return err
	}
	c.mirror = m
	if err := c.writeJSON(ready); err != nil {
		return err
	}
	if err := step("handshake.initial_buffer"); err != nil {
		return err
	}
	// The initial buffer is the mirror itself, float16: client and server
	// start bit-identical.
	if err := c.writeNow(Binary(m.AppendF16(nil))); err != nil {
		return err
	}
	if h := c.s.opts.Hooks.TimeToFirstAudio; h != nil {
		h(time.Since(c.start))
	}

	if stemMode != "" {
		if err := step("handshake.stem_payload"); err != nil { // hit 1: before the header
			return err
		}
		if st := sess.Stems; st != nil {
			hdr := StemAssets{FixtureName: cfg.FixtureName, SampleRate: sess.Info.SampleRate, Channels: 2,
				Frames: len(st.Vocals) / 2, Stems: Strings{StemVocals, StemInstruments}, SourceMode: stemMode}
			if err := c.writeJSON(hdr); err != nil {
				return err
			}
			if h := c.s.testHookStemHeaderSent; h != nil {
				h(c.ctx)
			}
			if err := c.writeNow(Binary(audio.AppendFloat16LE(nil, st.Vocals))); err != nil {
				return err
			}
			if err := step("handshake.stem_payload"); err != nil { // hit 2: between the stems
				return err
			}
			if err := c.writeNow(Binary(audio.AppendFloat16LE(nil, st.Instruments))); err != nil {
				return err
			}
		} else {
			msg := "stem extraction failed"
			if sess.StemErr != nil {
				msg = sess.StemErr.Error()
			}
			if err := c.writeJSON(StemFailed{FixtureName: cfg.FixtureName, Error: msg}); err != nil {
				return err
			}
		}
	}
	if err := c.cause(); err != nil {
		return err
	}
	mgr.Register(sess)
	*registered = true
	return step("handshake.after_register")
}

// readStartPCM reads the PCM frame after the config (handshake goroutine;
// the reader is not running yet). A frame over MaxUploadBytes is refused
// without reading it all: error frame, close 1009.
func (c *conn) readStartPCM() (channels int, pcm []float32, out *outcome) {
	fail := func(e Error, code int) (int, []float32, *outcome) {
		o := startFailure(e, code)
		return 0, nil, &o
	}
	c.ws.SetReadLimit(MaxInboundMessage)
	defer c.ws.SetReadLimit(textReadLimit)
	_ = c.ws.SetReadDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	typ, r, err := c.ws.NextReader()
	if err != nil {
		if c.cause() == errShutdown {
			o := c.shutdownOutcome()
			return 0, nil, &o
		}
		c.logger().Info("client left before sending its PCM frame", "err", err)
		c.gone(err)
		return 0, nil, &outcome{gone: true}
	}
	if typ != websocket.BinaryMessage {
		b, _ := io.ReadAll(io.LimitReader(r, textReadLimit))
		c.received(len(b))
		return fail(Error{Code: CodeBadSource, Message: "expected the binary PCM frame after the session config (use_server_fixture is false); got a text message"},
			websocket.CloseInternalServerErr)
	}
	limit := c.s.opts.MaxUploadBytes
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	c.received(len(data))
	if err != nil {
		if c.cause() == errShutdown {
			o := c.shutdownOutcome()
			return 0, nil, &o
		}
		c.logger().Info("client left while sending its PCM frame", "err", err, "bytes", len(data))
		c.gone(err)
		return 0, nil, &outcome{gone: true}
	}
	if int64(len(data)) > limit {
		c.logger().Info("PCM frame too large", "limit", limit)
		return fail(Error{Code: CodeBadSource, Message: fmt.Sprintf("PCM frame exceeds this server's limit of %d bytes", limit)},
			websocket.CloseMessageTooBig)
	}
	ch, _, samples, err := DecodePCMFrame(data)
	if err != nil {
		c.logger().Info("bad PCM frame", "err", err)
		return fail(Error{Code: CodeBadSource, Message: err.Error()}, websocket.CloseInternalServerErr)
	}
	return ch, samples, nil
}

// createFailed maps a Create error to the client-visible outcome.
func (c *conn) createFailed(err error) outcome {
	window := session.ErrorWindow(err)
	var se *session.StageError
	switch {
	case errors.Is(err, session.ErrAdmission):
		c.logger().Warn("session refused: device full", "err", err)
		return outcome{frame: &Error{Code: CodeServerBusy, Message: err.Error()},
			code: websocket.CloseTryAgainLater, reason: session.ErrAdmission.Error()}
	case errors.Is(err, session.ErrShuttingDown) || c.cause() == errShutdown:
		return c.shutdownOutcome()
	case c.cause() == errClientGone:
		c.logger().Info("session start abandoned: client gone", "err", err)
		return outcome{gone: true}
	case errors.As(err, &se) && se.Stage == "create.stems":
		c.logger().Warn("session start failed", "window", window, "err", err)
		return startFailure(Error{Code: CodeStemExtractFailed, Message: err.Error(), Window: window}, websocket.CloseInternalServerErr)
	case errors.Is(err, session.ErrBadRequest):
		c.logger().Info("session request refused", "window", window, "err", err)
		code := CodeBadConfig
		if window == "create.source_prepare" {
			code = CodeBadSource
		}
		return startFailure(Error{Code: code, Message: err.Error(), Window: window}, websocket.CloseInternalServerErr)
	}
	c.logger().Error("session start failed", "window", window, "err", err)
	return startFailure(Error{Code: CodeSessionStartFailed, Message: err.Error(), Window: window}, websocket.CloseInternalServerErr)
}

// handshakeFailed maps a handshake error (the guard has closed the session
// by the time the outcome is sent).
func (c *conn) handshakeFailed(err error) outcome {
	switch {
	case c.cause() == errShutdown:
		return c.shutdownOutcome()
	case c.cause() == errClientGone || errors.Is(err, errClientGone):
		c.logger().Info("client gone during the handshake", "err", err)
		return outcome{gone: true}
	}
	window := session.ErrorWindow(err)
	c.logger().Error("session start failed", "window", window, "err", err)
	if h := c.s.opts.Hooks.StartFailed; h != nil {
		h(&session.StageError{Stage: "handshake", Err: err})
	}
	return startFailure(Error{Code: CodeSessionStartFailed, Message: err.Error(), Window: window}, websocket.CloseInternalServerErr)
}

// runEnded maps Run's result.
func (c *conn) runEnded(err error) outcome {
	var ri *session.RunnerInitError
	var re *session.RuntimeError
	switch {
	case errors.As(err, &ri):
		window := session.ErrorWindow(ri.Err)
		c.logger().Error("session start failed: runner", "window", window, "err", err)
		if h := c.s.opts.Hooks.StartFailed; h != nil {
			h(err)
		}
		return startFailure(Error{Code: CodeSessionStartFailed, Message: err.Error(), Window: window}, websocket.CloseInternalServerErr)
	case errors.As(err, &re):
		c.logger().Error("generation stopped", "err", err)
		msg := "Generation stopped: " + re.Err.Error()
		return outcome{frame: &Error{Code: CodePipelineError, Message: msg}, code: websocket.CloseInternalServerErr, reason: "generation stopped"}
	case c.slow.Load():
		return outcome{code: websocket.CloseInternalServerErr, reason: errSlowClient.Error()}
	case c.cause() == errShutdown:
		return c.shutdownOutcome()
	case c.cause() == errClientGone:
		return outcome{gone: true, code: websocket.CloseGoingAway}
	case err != nil:
		c.logger().Error("session ended with an error", "err", err)
		return outcome{frame: &Error{Code: CodeInternal, Message: err.Error()}, code: websocket.CloseInternalServerErr, reason: "internal error"}
	}
	return outcome{code: websocket.CloseNormalClosure, reason: "session ended"}
}

// output delivers the run loop's slices to the writer.
type output struct{ c *conn }

// Slice queues a copy of the slice (encoded against the mirror only when the
// writer dequeues it) and then its params_update (coalescing).
func (o *output) Slice(ev *session.SliceEvent) error {
	c := o.c
	if c.cause() != nil {
		return nil // the loop sees ctx end at its next check
	}
	start := int(ev.StartSample)
	g := AudioGroup(c.mirror, c.enc, PendingSlice{Start: start, Samples: slices.Clone(ev.Samples),
		TickMs: ev.TickMs, DecMs: ev.DecMs, NumGens: ev.NumGens})
	frames := len(ev.Samples) / c.mirror.Channels()
	render := g.Render
	g.Render = func() ([]Frame, error) {
		f, err := render()
		if err == nil {
			c.sliceLateness(start)
			c.sliceCoverage(start, frames)
		}
		return f, err
	}
	if c.push(g) == SubscriberDropped {
		return ErrSubscriberDropped
	}
	pu, err := JSONGroup(ParamsUpdate{Params: c.telemetry(ev)})
	if err != nil {
		return nil
	}
	if c.push(pu) == SubscriberDropped {
		return ErrSubscriberDropped
	}
	return nil
}

// loadServerSource loads a built-in fixture or a persisted upload.
func (s *Server) loadServerSource(name string) ([]float32, error) {
	if !validName(name) {
		return nil, fmt.Errorf("%w %q", ErrUnknownFixture, name)
	}
	if slices.Contains(s.fixtures.Names(), name) {
		return s.fixtures.Load(name)
	}
	return s.uploads.Load(name)
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
