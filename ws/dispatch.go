package ws

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

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
// before the session exists (a client speaking before ready) are dropped
// with a log line.

// Not-yet-supported features answer with a failure the client understands.
const (
	notSupportedSwapStems = "stems for a swapped source are not supported by demon yet"
	notSupportedTimbre    = "timbre references are not supported by demon yet"
	notSupportedStructure = "structure references are not supported by demon yet"
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
// between two browser messages, never inside one.
func (c *conn) apply(msg Message, follow []byte) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	sess := c.sess.Load()
	if sess == nil {
		c.logger().Info("client message before the session started; ignored", "type", msg.Type())
		return
	}
	if _, ok := msg.(*Params); !ok {
		sess.Touch() // any message but an unchanged knob heartbeat is activity
	}
	switch m := msg.(type) {
	case *Params:
		c.applyParams(sess, m)
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
		c.send(LoRACatalog{})
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

// applyParams merges raw into the connection's knob state, maps it onto the
// session's controls, and moves the playhead. Touch only when raw changed
// (the 8 ms heartbeat must not keep an idle session busy).
func (c *conn) applyParams(sess *session.Session, m *Params) {
	c.mu.Lock()
	changed := !m.Raw.Equal(c.lastRaw)
	c.lastRaw = m.Raw
	for k, v := range m.Raw {
		c.knobs[k] = v
	}
	var ct session.Controls
	applyKnobs(&ct, c.knobs)
	if m.HasPlaybackPos {
		pos := m.PlaybackPos
		if c.duration > 0 {
			pos = math.Mod(pos, c.duration)
		}
		c.playhead, c.playheadAt = pos, timeNow()
	}
	pos := c.playhead
	c.mu.Unlock()
	sess.UpdateControls(func(dst *session.Controls) {
		dst.Seed, dst.Denoise, dst.HintStrength, dst.Shift = ct.Seed, ct.Denoise, ct.HintStrength, ct.Shift
		dst.Guidance, dst.CFGRescale, dst.RCFGMode, dst.ChannelGain = ct.Guidance, ct.CFGRescale, ct.RCFGMode, ct.ChannelGain
	})
	if m.HasPlaybackPos {
		sess.SetPlayhead(pos)
	}
	if changed {
		sess.Touch()
	}
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
