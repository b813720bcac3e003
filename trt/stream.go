package trt

/*
#include <stdlib.h>
#include "demon/demon.h"
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// StreamOptions configure NewStream (see dm_stream_options in demon.h).
type StreamOptions struct {
	Frames     int     // T: latent frames of the source
	MaxDepth   int     // ring capacity (depth may change up to it)
	Depth      int     // initial depth
	Steps      int     // denoising steps
	Shift      float32 // timestep shift
	MaxCondLen int     // longest conditioning accepted (32..512)
	VAEWindow  float32 // kept slice seconds (0.04..0.36)
	LeadS      float32 // decode lead ahead of the playhead, seconds
	// MaxPrompts is 1 (0 means 1): prompt A/B is the tick's scalar lerp; or 2: SetBlendCurve
	// may also weigh them per frame, at two decoder rows per slot (2·MaxDepth must fit the
	// decoder's max batch).
	MaxPrompts int
}

// Condition slots of a stream.
const (
	CondPromptA  = C.DM_COND_PROMPT_A
	CondPromptB  = C.DM_COND_PROMPT_B
	CondNegative = C.DM_COND_NEGATIVE
)

// TickParams are the knobs of one tick.
type TickParams struct {
	Submit            bool
	Seed              int64
	Denoise           float32
	PromptBlend       float32
	HintStrength      float32
	Guidance          float32
	RCFGMode          int // 0 off, 1 full, 2 initialize, 3 self
	CFGRescale        float32
	VelocityScale     float32
	Shift             float32
	Depth             int
	PlayheadS         float64
	Decode            bool
	ChannelGainActive bool
	ChannelGain       [64]float32
}

// TickResult reports one tick.
type TickResult struct {
	Emitted      bool
	Decoded      bool
	StartSample  int64 // frame index of the slice in the playback buffer
	NumSamples   int   // frames in the slice (2× floats)
	TickMs       float32
	DecMs        float32
	EngineMs     float32 // of TickMs, time inside decoder engine execution
	VAEMs        float32 // of DecMs, time inside the windowed VAE engine
	NumGens      uint32
	Active       int
	DecoderCalls int
	Depth        int
}

// MaxSliceFloats is enough room for any slice (0.36 s of stereo).
const MaxSliceFloats = 2 * 9 * 1920

// MaxSliceHalfBytes is enough room for any slice as float16 bytes.
const MaxSliceHalfBytes = 2 * MaxSliceFloats

// SliceBuffers receive a decoded slice. F32 (required when decoding) gets the interleaved
// stereo float32 samples, slice F32[:2·NumSamples]. F16, when not nil, also gets the same
// samples as IEEE float16, little-endian: F16[:4·NumSamples] is the wire's RAW slice payload
// (spec/protocol.md §4.1), converted in the shim (the same bits as audio.AppendFloat16LE).
type SliceBuffers struct {
	F32 []float32
	F16 []byte
}

// Stream is a live session's streaming pipeline in the shim. Tick is the one native call
// per tick and allocates nothing, in C++ or in Go.
type Stream struct {
	mu sync.Mutex
	h  *C.dm_stream
	st *handleState
	// Reused across ticks so the hot path allocates nothing.
	cparams C.dm_tick_params
	cresult C.dm_tick_result
	cerr    C.dm_error
}

// NewStream creates a stream that runs the decoder through decoderCtx (whose activation
// memory it uses) and decodes with the windowed VAE engine. owner tags its memory.
func NewStream(decoderCtx *Context, windowVAE *Engine, owner string, o StreamOptions) (*Stream, error) {
	co := C.CString(owner)
	defer C.free(unsafe.Pointer(co))
	copts := C.dm_stream_options{
		frames: C.int(o.Frames), max_depth: C.int(o.MaxDepth), depth: C.int(o.Depth), steps: C.int(o.Steps),
		shift: C.float(o.Shift), max_cond_len: C.int(o.MaxCondLen), vae_window: C.float(o.VAEWindow), lead_s: C.float(o.LeadS),
		max_prompts: C.int(o.MaxPrompts),
	}
	var s *Stream
	err := decoderCtx.with("create stream", func(ch *C.dm_context, _ *C.char) error {
		return windowVAE.useEngine("create stream", func(eh *C.dm_engine) error {
			var ce C.dm_error
			var sh *C.dm_stream
			if err := check("create stream", C.dm_stream_create(ch, eh, co, &copts, &sh, &ce), &ce); err != nil {
				return err
			}
			s = &Stream{h: sh}
			s.st = track(s, "stream")
			return nil
		})
	}, "")
	return s, err
}

// Close frees the stream. It is idempotent.
func (s *Stream) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return nil
	}
	C.dm_stream_free(&s.h) // frees the handle and sets s.h to nil
	s.st.release()
	return nil
}

func (s *Stream) do(op string, fn func(h *C.dm_stream, e *C.dm_error) C.int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return errClosed(op, "stream")
	}
	return check(op, fn(s.h, &s.cerr), &s.cerr)
}

// Bytes returns the device bytes the stream allocated.
func (s *Stream) Bytes() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return uint64(C.dm_stream_bytes(s.h))
}

// SetSource sets the source latent from VAE-encode moments [1,128,frames].
func (s *Stream) SetSource(moments *Buffer, frames int) error {
	moments.mu.Lock()
	defer moments.mu.Unlock()
	return s.do("set stream source", func(h *C.dm_stream, e *C.dm_error) C.int {
		return C.dm_stream_set_source(h, moments.h, C.int(frames), e)
	})
}

// SetCondition copies conditioning [1,length,2048] from enc into a slot.
func (s *Stream) SetCondition(slot int, enc *Buffer, length int) error {
	enc.mu.Lock()
	defer enc.mu.Unlock()
	return s.do("set stream condition", func(h *C.dm_stream, e *C.dm_error) C.int {
		return C.dm_stream_set_condition(h, C.int(slot), enc.h, C.int(length), e)
	})
}

// SetCurve sets a shared-curve override by DEMON field name (velocity_scale,
// sde_denoise_curve, ode_noise_curve, apg_momentum, x0_target_strength, cfg_rescale_curve,
// guidance_curve) for every in-flight slot from the next tick: nil clears it, one value is
// a scalar, T values a per-frame curve.
func (s *Stream) SetCurve(name string, values []float32) error {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var p *C.float
	if len(values) > 0 {
		p = (*C.float)(unsafe.Pointer(&values[0]))
	}
	return s.do("set curve "+name, func(h *C.dm_stream, e *C.dm_error) C.int {
		return C.dm_stream_set_curve(h, cn, p, C.int(len(values)), e)
	})
}

// SetBlendCurve weighs prompt A and B per latent frame: w[t] in [0, 1] is prompt B's
// weight at frame t, 1 − w[t] prompt A's; each prompt gets its own decoder row and their
// velocities blend per frame (spec §4.1 temporal_weight). T values are a curve, one a
// constant; nil clears it (back to TickParams.PromptBlend, a lerp of the conditionings).
// Requests submitted from the next tick carry it. Needs StreamOptions.MaxPrompts 2.
func (s *Stream) SetBlendCurve(w []float32) error {
	var p *C.float
	if len(w) > 0 {
		p = (*C.float)(unsafe.Pointer(&w[0]))
	}
	return s.do("set blend curve", func(h *C.dm_stream, e *C.dm_error) C.int {
		return C.dm_stream_set_blend_curve(h, p, C.int(len(w)), e)
	})
}

// SetPlayback sets the looping playback buffer (interleaved stereo).
func (s *Stream) SetPlayback(interleaved []float32) error {
	if len(interleaved) == 0 {
		return &Error{Op: "set playback", Code: CodeInvalidArgument, Msg: "empty playback buffer"}
	}
	return s.do("set playback", func(h *C.dm_stream, e *C.dm_error) C.int {
		return C.dm_stream_set_playback(h, (*C.float)(unsafe.Pointer(&interleaved[0])), C.int64_t(len(interleaved)/2), e)
	})
}

// ReadPlayback copies len(dst)/2 frames of the playback buffer from frame start.
func (s *Stream) ReadPlayback(start int64, dst []float32) error {
	if len(dst) == 0 {
		return nil
	}
	return s.do("read playback", func(h *C.dm_stream, e *C.dm_error) C.int {
		return C.dm_stream_read_playback(h, C.int64_t(start), (*C.float)(unsafe.Pointer(&dst[0])), C.int64_t(len(dst)/2), e)
	})
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// Tick runs one tick. When a latent is decoded, the slice is written to slice[:2·NumSamples].
func (s *Stream) Tick(p *TickParams, slice []float32) (TickResult, error) {
	return s.TickInto(p, SliceBuffers{F32: slice})
}

// sliceArgs are the C views of out (nil pointers for empty slices).
func sliceArgs(out SliceBuffers) (*C.float, C.int64_t, *C.uint8_t, C.int64_t) {
	var f32 *C.float
	var f16 *C.uint8_t
	if len(out.F32) > 0 {
		f32 = (*C.float)(unsafe.Pointer(&out.F32[0]))
	}
	if len(out.F16) > 0 {
		f16 = (*C.uint8_t)(unsafe.Pointer(&out.F16[0]))
	}
	return f32, C.int64_t(len(out.F32)), f16, C.int64_t(len(out.F16))
}

// TickInto runs one tick, writing a decoded slice to out. It is the one native call per
// tick and allocates nothing. With p.Decode set, buffers too small for the stream's slices
// are refused before anything changes.
func (s *Stream) TickInto(p *TickParams, out SliceBuffers) (TickResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return TickResult{}, errClosed("tick", "stream")
	}
	cp := &s.cparams
	cp.submit = cbool(p.Submit)
	cp.seed = C.int64_t(p.Seed)
	cp.denoise = C.float(p.Denoise)
	cp.prompt_blend = C.float(p.PromptBlend)
	cp.hint_strength = C.float(p.HintStrength)
	cp.guidance = C.float(p.Guidance)
	cp.rcfg_mode = C.int(p.RCFGMode)
	cp.cfg_rescale = C.float(p.CFGRescale)
	cp.velocity_scale = C.float(p.VelocityScale)
	cp.shift = C.float(p.Shift)
	cp.depth = C.int(p.Depth)
	cp.playhead_s = C.double(p.PlayheadS)
	cp.decode = cbool(p.Decode)
	cp.channel_gain_active = cbool(p.ChannelGainActive)
	for i, g := range p.ChannelGain {
		cp.channel_gain[i] = C.float(g)
	}
	f32, f32cap, f16, f16cap := sliceArgs(out)
	rc := C.dm_stream_tick(s.h, cp, &s.cresult, f32, f32cap, f16, f16cap, &s.cerr)
	if rc != C.DM_OK {
		return TickResult{}, check("tick", rc, &s.cerr)
	}
	return s.result(), nil
}

// DecodeWindow is the decode half of a tick without the DiT, for the idle mode of spec
// §4.10 step 2 ("keep decoding the last latent"): it decodes the window at playheadS + lead
// of latent ([T·64] floats, frame-major) or, with latent nil, of the last latent the stream
// emitted (ErrState if none yet), crossfades and patches it into the playback buffer, and
// writes the slice to out like TickInto. One native call; allocates nothing.
func (s *Stream) DecodeWindow(playheadS float64, latent []float32, out SliceBuffers) (TickResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h == nil {
		return TickResult{}, &Error{Op: "decode window", Code: CodeState, Msg: ErrClosed.Error()}
	}
	if len(latent)%64 != 0 {
		return TickResult{}, &Error{Op: "decode window", Code: CodeInvalidArgument, Msg: fmt.Sprintf("latent of %d floats is not whole 64-channel frames", len(latent))}
	}
	var lp *C.float
	if len(latent) > 0 {
		lp = (*C.float)(unsafe.Pointer(&latent[0]))
	}
	f32, f32cap, f16, f16cap := sliceArgs(out)
	rc := C.dm_stream_decode_window(s.h, C.double(playheadS), lp, C.int(len(latent)/64), &s.cresult, f32, f32cap, f16, f16cap, &s.cerr)
	if rc != C.DM_OK {
		return TickResult{}, check("decode window", rc, &s.cerr)
	}
	return s.result(), nil
}

// result converts the last call's dm_tick_result (s.mu held).
func (s *Stream) result() TickResult {
	r := &s.cresult
	return TickResult{
		Emitted: r.emitted != 0, Decoded: r.decoded != 0,
		StartSample: int64(r.start_sample), NumSamples: int(r.num_samples),
		TickMs: float32(r.tick_ms), DecMs: float32(r.dec_ms), EngineMs: float32(r.engine_ms), VAEMs: float32(r.vae_ms), NumGens: uint32(r.num_gens),
		Active: int(r.active), DecoderCalls: int(r.decoder_calls), Depth: int(r.depth),
	}
}
