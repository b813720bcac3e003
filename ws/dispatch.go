package ws

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/demon-audio/demon/session"
)

// Client messages during streaming (protocol.md §4.6), handled on the
// reader goroutine. Acks go through the outgoing queue, so they keep their
// order relative to each other. Malformed messages get a non-fatal error
// event (code bad_message), plus the failure event a swap or reference
// request waits for, and the session goes on; unknown types get
// not_supported. A message that takes a PCM frame owns the next WS message
// even when it is refused; a PCM frame over MaxUploadBytes is read to its
// end and answered with the request's failure event. Messages that arrive
// before the session exists (a client speaking before ready) are held and
// carried out once it runs. Features demon lacks answer with their failure
// event or not_supported, never silence: LoRA requests get the (empty)
// catalog plus not_supported, and params knobs demon ignores are named in
// one not_supported event per knob per session.

// Not-yet-supported features answer with a failure the client understands.
const (
	notSupportedSwapStems = "stems for a swapped source are not supported by demon yet"
	notSupportedTimbre    = "timbre references are not supported by demon yet"
	notSupportedStructure = "structure references are not supported by demon yet"
	notSupportedLoRA      = "LoRA adapters are not supported by demon yet; the catalog is empty and nothing was enabled or disabled"
)

// rcfgModes maps rcfg_mode to session.Controls.RCFGMode.
var rcfgModes = map[string]int{"off": 0, "full": 1, "initialize": 2, "self": 3}

// keystoneChannels are the single-channel gain knobs ch<N>.
var keystoneChannels = []int{13, 14, 19, 23, 29, 56}

func (c *conn) dispatch(data []byte) {
	msg, err := DecodeClientMessage(data)
	// A message that takes a PCM frame owns the next WS message even when it
	// fails to decode: left unread, the PCM would be taken for the next
	// message.
	takesPCM := PCMFollows(data)
	if err == nil {
		takesPCM = msg.ExpectsPCM()
	}
	var follow []byte
	if takesPCM {
		var tooBig bool
		var rerr error
		if follow, tooBig, rerr = c.readFollowUp(); rerr != nil {
			c.gone(rerr)
			return
		}
		if tooBig && err == nil {
			limit := c.s.opts.MaxUploadBytes
			reason := fmt.Sprintf("PCM frame exceeds this server's limit of %d bytes", limit)
			c.logger().Info("PCM follow-up too large; refused", "type", msg.Type(), "limit", limit)
			if ev := failureEvent(msg.Type(), reason); ev != nil {
				c.send(ev)
			} else {
				c.send(Error{Code: CodeBadMessage, Message: reason})
			}
			return
		}
	}
	if err != nil {
		c.refuse(data, err)
		return
	}
	c.apply(msg, follow)
}

// refuse answers a message that failed to decode: not_supported for an
// unknown type, otherwise a bad_message error plus the failure event its
// sender waits for, if its type has one.
func (c *conn) refuse(data []byte, err error) {
	var ut *UnknownTypeError
	if errors.As(err, &ut) {
		c.logger().Info("unknown client message type", "type", ut.Type)
		c.send(NotSupportedFor(ut.Type))
		return
	}
	c.logger().Info("malformed client message", "err", err)
	c.send(Error{Code: CodeBadMessage, Message: err.Error()})
	typ, _ := MessageTypeOf(data)
	if ev := failureEvent(typ, "request refused: "+err.Error()); ev != nil {
		c.send(ev)
	}
}

// failureEvent is the event the sender of a request of type typ waits for
// when it cannot be carried out (DEMON's client has no timeouts, §10.15):
// swap_failed, timbre_failed or structure_failed; nil for other types.
func failureEvent(typ, reason string) ServerMessage {
	switch typ {
	case TypeSwapSource:
		return SwapFailed{Error: reason}
	case TypeSetTimbreSource, TypeSetTimbreFixture:
		return TimbreFailed{Error: reason}
	case TypeSetStructureSource, TypeSetStructureFixture:
		return StructureFailed{Error: reason}
	}
	return nil
}

// apply carries out one decoded client message (with its PCM follow-up, if
// it takes one), from the browser's socket or from the control bus. applyMu
// serialises the two origins, so a command queued by the control bus runs
// between two browser messages, never inside one. A message that arrives
// before the session exists is held and carried out, in order, once it does.
func (c *conn) apply(msg Message, follow []byte) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	sess := c.sess.Load()
	if sess == nil {
		c.hold(msg, follow)
		return
	}
	c.replayHeld(sess)
	c.applyTo(sess, msg, follow)
}

func (c *conn) applyTo(sess *session.Session, msg Message, follow []byte) {
	if _, ok := msg.(*Params); !ok {
		sess.Touch() // any message but an unchanged knob heartbeat is activity
	}
	switch m := msg.(type) {
	case *Params:
		changed := c.mergeParams(m)
		c.pushParams(sess, m.HasPlaybackPos, changed)
	case *SetPromptBlend:
		sess.UpdateControls(func(ct *session.Controls) { ct.PromptBlend = float32(m.Value) })
	case *SetTimbreStrength:
		c.mu.Lock()
		c.timbreStr = m.Value
		c.mu.Unlock()
	case *Prompt:
		tagsB, key, meter := deref(m.TagsB), deref(m.Key), deref(m.TimeSignature)
		err := sess.Do(c.ctx, func(r *session.Runtime) error { return r.SetPrompt(m.Tags, tagsB, key, meter) })
		if err != nil {
			if c.cause() == nil {
				c.send(Error{Code: CodeBadMessage, Message: "prompt not applied: " + err.Error()})
			}
			return
		}
		c.mu.Lock()
		c.prompt = m.Tags
		c.mu.Unlock()
		c.send(PromptApplied{Tags: m.Tags})
	case *SetDepth:
		// Applied on the run loop between ticks; the ack follows once the
		// loop has taken it, so the next tick runs at the new depth.
		v := max(1, min(m.Value, sess.Info.MaxDepth))
		err := sess.Do(c.ctx, func(*session.Runtime) error {
			sess.UpdateControls(func(ct *session.Controls) { ct.Depth = v })
			return nil
		})
		if err == nil {
			c.send(DepthApplied{Value: v})
		}
	case *LoopBand:
		// Arms or clears the band the run loop aims slices into (§4.3), from
		// the next tick. No ack (§4.7).
		start, end := 0.0, 0.0
		if m.Armed() {
			start, end = *m.StartSec, *m.EndSec
		}
		sess.UpdateControls(func(ct *session.Controls) { ct.LoopStart, ct.LoopEnd = start, end })
	case *EnableLoRA, *DisableLoRA:
		// The catalog the client waits for (demon has none: empty, as
		// /api/loras says), and why nothing changed.
		c.send(LoRACatalog{})
		c.send(NotSupported{Request: msg.Type(), Message: notSupportedLoRA})
	case *SetTimbreSource, *SetTimbreFixture:
		c.send(TimbreFailed{Error: notSupportedTimbre})
	case *ClearTimbreSource:
		c.send(TimbreCleared{}) // nothing was set: clearing trivially succeeds
	case *SetStructureSource, *SetStructureFixture:
		c.send(StructureFailed{Error: notSupportedStructure})
	case *ClearStructureSource:
		c.send(StructureCleared{})
	case *SwapSource:
		c.swap(sess, m, follow)
	case *UploadTrack:
		c.send(NotSupported{Request: TypeUploadTrack, Message: "upload_track must be the first message of its own socket"})
	default:
		c.send(NotSupportedFor(msg.Type()))
	}
}

// heldMessage is a client message that arrived before the session existed.
type heldMessage struct {
	msg    Message
	follow []byte
}

// maxHeldMessages bounds the messages held before the session exists
// (params are merged, not held, so the heartbeat never fills it).
const maxHeldMessages = 64

// hold keeps a message that arrived before the session existed (DEMON's
// server reads such messages once its receive loop starts, so they are
// carried out late, not lost). Params merge into the knob state at once and
// reach the session on replay. Beyond the bounds (maxHeldMessages, PCM
// follow-ups totalling MaxUploadBytes) a message is refused with its
// failure event, or a single bad_message error.
func (c *conn) hold(msg Message, follow []byte) {
	if m, ok := msg.(*Params); ok {
		c.mergeParams(m)
		c.heldParams = true
		c.heldPlayhead = c.heldPlayhead || m.HasPlaybackPos
		c.holding.Store(true)
		return
	}
	if len(c.held) >= maxHeldMessages || int64(c.heldBytes+len(follow)) > c.s.opts.MaxUploadBytes {
		const reason = "too many messages before the session was ready; dropped"
		c.logger().Info("client message before the session exists; dropped", "type", msg.Type(), "held", len(c.held))
		if ev := failureEvent(msg.Type(), reason); ev != nil {
			c.send(ev)
		} else if !c.heldOverflow {
			c.heldOverflow = true
			c.send(Error{Code: CodeBadMessage, Message: reason})
		}
		return
	}
	c.logger().Info("client message before the session exists; held until it does", "type", msg.Type())
	c.held = append(c.held, heldMessage{msg, follow})
	c.heldBytes += len(follow)
	c.holding.Store(true)
}

// replayHeld carries out the held messages, in order (applyMu held).
func (c *conn) replayHeld(sess *session.Session) {
	if !c.holding.Load() {
		return
	}
	c.holding.Store(false)
	if c.heldParams {
		c.pushParams(sess, c.heldPlayhead, true)
		c.heldParams, c.heldPlayhead = false, false
	}
	held := c.held
	c.held, c.heldBytes = nil, 0
	for _, h := range held {
		c.applyTo(sess, h.msg, h.follow)
	}
}

// startReplay carries out the held messages once the run loop runs (the
// commands they send the session wait for it), unless the reader's next
// message does it first; applyMu keeps the order either way. Called just
// before Run; cleanup waits for it.
func (c *conn) startReplay(sess *session.Session) {
	if !c.holding.Load() {
		return
	}
	c.replayDone = make(chan struct{})
	go func() {
		defer close(c.replayDone)
		c.applyMu.Lock()
		defer c.applyMu.Unlock()
		c.replayHeld(sess)
	}()
}

// mergeParams merges raw into the connection's knob state and records the
// playhead; it reports whether raw changed (the 8 ms heartbeat is not
// activity, so it must not keep an idle session busy) and reports, once
// per knob, the knobs demon ignores.
func (c *conn) mergeParams(m *Params) (changed bool) {
	c.mu.Lock()
	changed = !m.Raw.Equal(c.lastRaw)
	c.lastRaw = m.Raw
	var ignored []string
	for k, v := range m.Raw {
		c.knobs[k] = v
		if ignoredKnob(k) && !c.reportedKnobs[k] {
			c.reportedKnobs[k] = true
			ignored = append(ignored, k)
		}
	}
	if m.HasPlaybackPos {
		pos := m.PlaybackPos
		if c.duration > 0 {
			pos = math.Mod(pos, c.duration)
		}
		c.playhead, c.playheadAt = pos, timeNow()
	}
	c.mu.Unlock()
	if len(ignored) > 0 {
		slices.Sort(ignored)
		c.send(NotSupported{Request: TypeParams, Knobs: ignored,
			Message: "demon ignores these params knobs (reported once per session): " + strings.Join(ignored, ", ")})
	}
	return changed
}

// pushParams maps the knob state onto the session's controls and, when
// asked, moves its playhead; a change of raw counts as activity.
func (c *conn) pushParams(sess *session.Session, playhead, changed bool) {
	c.mu.Lock()
	var ct session.Controls
	applyKnobs(&ct, c.knobs)
	if c.duration > 0 { // a playhead held from before the session was not wrapped yet
		c.playhead = math.Mod(c.playhead, c.duration)
	}
	pos := c.playhead
	c.mu.Unlock()
	sess.UpdateControls(func(dst *session.Controls) {
		dst.Seed, dst.Denoise, dst.HintStrength, dst.Shift = ct.Seed, ct.Denoise, ct.HintStrength, ct.Shift
		dst.Guidance, dst.CFGRescale, dst.RCFGMode, dst.ChannelGain = ct.Guidance, ct.CFGRescale, ct.RCFGMode, ct.ChannelGain
	})
	if playhead {
		sess.SetPlayhead(pos)
	}
	if changed {
		sess.Touch()
	}
}

// appliedKnobs are the params knobs applyKnobs maps onto session controls.
var appliedKnobs = func() map[string]bool {
	m := map[string]bool{KnobSeed: true, KnobDenoise: true, KnobHintStrength: true, KnobShift: true,
		KnobGuidanceScale: true, KnobCFGRescale: true, KnobRCFGMode: true}
	for _, n := range ChannelKnobs {
		m[n] = true
	}
	return m
}()

// ignoredKnob reports whether name is a knob DEMON's server applies and
// demon does not (feedback, DCW, steps_override, the SDE knobs, per-LoRA
// strengths). lora_default_strength is a UI seed DEMON ignores too, and
// unknown keys are the client's own business.
func ignoredKnob(name string) bool {
	if appliedKnobs[name] || name == KnobLoRADefaultStrength {
		return false
	}
	_, known := LookupKnob(name)
	return known
}

// applyKnobs maps knobs onto controls: seed, denoise, hint_strength, shift,
// guidance_scale, cfg_rescale, rcfg_mode (off/full/initialize/self →
// 0/1/2/3) and the channel gains: ch_g<g> scales latent channels 8g..8g+7,
// and each keystone ch<N> multiplies channel N on top of its group.
func applyKnobs(ct *session.Controls, k Knobs) {
	ct.Seed = int64(k.Seed())
	ct.Denoise = float32(k.Denoise())
	ct.HintStrength = float32(k.HintStrength())
	ct.Shift = float32(k.Shift())
	ct.Guidance = float32(k.GuidanceScale())
	ct.CFGRescale = float32(k.CFGRescale())
	ct.RCFGMode = rcfgModes[k.RCFGMode()]
	for i := range ct.ChannelGain {
		ct.ChannelGain[i] = float32(k.Float("ch_g" + strconv.Itoa(i/8)))
	}
	for _, n := range keystoneChannels {
		ct.ChannelGain[n] *= float32(k.Float(fmt.Sprintf("ch%d", n)))
	}
}

// telemetry is the params_update snapshot after a slice (§4.4).
func (c *conn) telemetry(ev *session.SliceEvent) map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.knobs
	p := map[string]any{
		"num_gens": ev.NumGens, "tick_ms": ev.TickMs, "dec_ms": ev.DecMs,
		"denoise": k.Denoise(), "seed": k.Seed(), "feedback": k.Feedback(), "feedback_depth": k.FeedbackDepth(),
		"shift": k.Shift(), "hint_strength": k.HintStrength(), "depth": ev.Depth, "_prompt": c.prompt,
	}
	for _, n := range ChannelKnobs {
		p[n] = k.Float(n)
	}
	return p
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// swap answers swap_source (§4.9) with swap_ready + the new buffer, or
// swap_failed; it never leaves the client waiting. The swap runs on the run
// loop between ticks, and the swap group is queued from there, so every
// slice queued before it was computed against the old buffer and every later
// one against the new buffer; the writer resets the mirror when it writes
// the group. A requested stem payload is answered with stem_failed (stems
// for swaps are not implemented yet).
func (c *conn) swap(sess *session.Session, m *SwapSource, follow []byte) {
	name := deref(m.FixtureName)
	var pcm []float32
	ch := 2
	var err error
	if m.UseServerSource {
		if pcm, err = c.s.loadServerSource(name); err != nil {
			c.send(SwapFailed{Error: "server source load failed: " + err.Error()})
			return
		}
	} else if ch, _, pcm, err = DecodePCMFrame(follow); err != nil {
		c.send(SwapFailed{Error: err.Error()})
		return
	}
	var trailer []Frame
	if m.StemSourceMode != nil {
		if b, err := EncodeServerMessage(StemFailed{FixtureName: name, Error: notSupportedSwapStems}); err == nil {
			trailer = append(trailer, Text(b))
		}
	}
	err = sess.Do(c.ctx, func(r *session.Runtime) error {
		buf, err := r.Swap(pcm, ch, name)
		if err != nil {
			return err
		}
		if m.Tags != nil {
			if err := r.SetPrompt(*m.Tags, "", deref(m.Key), deref(m.TimeSignature)); err != nil {
				c.logger().Warn("swap: re-encoding the prompt failed; keeping the previous prompt", "err", err)
			} else {
				c.mu.Lock()
				c.prompt = *m.Tags
				c.mu.Unlock()
			}
		}
		dur := float64(len(buf)/2) / 48000
		c.mu.Lock()
		c.duration, c.playhead, c.playheadAt = dur, 0, timeNow()
		c.mu.Unlock()
		var fixture *string
		if name != "" {
			fixture = &name
		}
		ready := SwapReady{Duration: dur, SampleRate: 48000, Channels: 2, Key: m.Key, TimeSignature: m.TimeSignature, FixtureName: fixture}
		c.push(SwapGroup(c.mirror, ready, slices.Clone(buf), trailer...))
		return nil
	})
	if err != nil && c.cause() == nil {
		c.send(SwapFailed{Error: err.Error()})
	}
}
