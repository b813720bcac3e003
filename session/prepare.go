package session

import (
	"fmt"
	"log/slog"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
)

// Source preparation runs engines on transient contexts and buffers, all accounted to the
// session's owner tag and all released before the step returns (each release registered
// right after its acquisition, through a local rollback). A release that fails is logged
// to the session's logger, like every other cleanup error of the session.

// transient allocates device buffers and contexts that live for one preparation step.
type transient struct {
	dev   *trt.Device
	owner string
	rb    rollback
}

func newTransient(dev *trt.Device, owner string, log *slog.Logger) *transient {
	return &transient{dev: dev, owner: owner, rb: rollback{log: log}}
}

func (t *transient) buffer(floats int) (*trt.Buffer, error) {
	b, err := t.dev.Alloc(uint64(4*floats), t.owner)
	if err != nil {
		return nil, err
	}
	t.rb.push("buffer", b.Close)
	return b, nil
}

func (t *transient) context(e *trt.Engine) (*trt.Context, error) {
	c, err := e.NewContext(t.owner)
	if err != nil {
		return nil, err
	}
	t.rb.push(e.Component()+" context", c.Close)
	return c, nil
}

func (t *transient) release() { t.rb.run(nil) }

// planar converts interleaved stereo to the engines' [2, S] layout.
func planar(interleaved []float32) []float32 {
	s := len(interleaved) / 2
	out := make([]float32, len(interleaved))
	for i := range s {
		out[i], out[s+i] = interleaved[2*i], interleaved[2*i+1]
	}
	return out
}

func interleave(p []float32) []float32 {
	s := len(p) / 2
	out := make([]float32, len(p))
	for i := range s {
		out[2*i], out[2*i+1] = p[i], p[s+i]
	}
	return out
}

// encodeSource VAE-encodes interleaved stereo audio and hands the moments buffer
// [1,128,T] to the caller (who owns it); everything else is released here.
func encodeSource(dev *trt.Device, model *models.Model, owner string, log *slog.Logger, audio []float32) (*trt.Buffer, int, error) {
	t := newTransient(dev, owner, log)
	defer t.release()
	samples := len(audio) / 2
	frames := samples / models.Hop
	ctx, err := t.context(model.Engine(models.VAEEncode))
	if err != nil {
		return nil, 0, err
	}
	in, err := t.buffer(len(audio))
	if err != nil {
		return nil, 0, err
	}
	if err := in.WriteFloat32(0, planar(audio)); err != nil {
		return nil, 0, err
	}
	moments, err := dev.Alloc(uint64(4*128*frames), owner)
	if err != nil {
		return nil, 0, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = moments.Close()
		}
	}()
	if err := ctx.SetShape("audio", 1, 2, int64(samples)); err != nil {
		return nil, 0, err
	}
	if err := ctx.Bind("audio", in); err != nil {
		return nil, 0, err
	}
	if err := ctx.Bind("moments", moments); err != nil {
		return nil, 0, err
	}
	if err := ctx.Execute(); err != nil {
		return nil, 0, err
	}
	ok = true
	return moments, frames, nil
}

// Stems are the two stems of a source, interleaved stereo like the playback buffer.
type Stems struct {
	Vocals      []float32
	Instruments []float32
}

// separateStems runs the stem separator on interleaved stereo audio.
func separateStems(dev *trt.Device, model *models.Model, owner string, log *slog.Logger, audio []float32) (*Stems, error) {
	t := newTransient(dev, owner, log)
	defer t.release()
	n := len(audio)
	ctx, err := t.context(model.Engine(models.StemSeparator))
	if err != nil {
		return nil, err
	}
	bufs := map[string]*trt.Buffer{}
	for _, name := range []string{"audio", "vocals", "instruments"} {
		b, err := t.buffer(n)
		if err != nil {
			return nil, err
		}
		if err := ctx.Bind(name, b); err != nil {
			return nil, err
		}
		bufs[name] = b
	}
	if err := bufs["audio"].WriteFloat32(0, planar(audio)); err != nil {
		return nil, err
	}
	if err := ctx.SetShape("audio", 1, 2, int64(n/2)); err != nil {
		return nil, err
	}
	if err := ctx.Execute(); err != nil {
		return nil, err
	}
	out := make([][]float32, 2)
	for i, name := range []string{"vocals", "instruments"} {
		p := make([]float32, n)
		if err := bufs[name].ReadFloat32(0, p); err != nil {
			return nil, err
		}
		out[i] = interleave(p)
	}
	return &Stems{Vocals: out[0], Instruments: out[1]}, nil
}

// encodePrompt runs the text encoder and copies the conditioning into a stream slot.
func encodePrompt(dev *trt.Device, model *models.Model, owner string, log *slog.Logger, stream *trt.Stream, slot int, p trt.Prompt, negative bool, maxLen int) error {
	ids, err := trt.Tokenize(p, negative)
	if err != nil {
		return err
	}
	if len(ids) > maxLen {
		return fmt.Errorf("%w: prompt of %d tokens exceeds this server's limit of %d", ErrBadRequest, len(ids), maxLen)
	}
	t := newTransient(dev, owner, log)
	defer t.release()
	ctx, err := t.context(model.Engine(models.TextEncoder))
	if err != nil {
		return err
	}
	tok, err := dev.Alloc(uint64(4*len(ids)), owner)
	if err != nil {
		return err
	}
	t.rb.push("tokens", tok.Close)
	if err := tok.WriteInt32(0, ids); err != nil {
		return err
	}
	enc, err := t.buffer(len(ids) * 2048)
	if err != nil {
		return err
	}
	if err := ctx.SetShape("token_ids", 1, int64(len(ids))); err != nil {
		return err
	}
	if err := ctx.Bind("token_ids", tok); err != nil {
		return err
	}
	if err := ctx.Bind("encoder_hidden_states", enc); err != nil {
		return err
	}
	if err := ctx.Execute(); err != nil {
		return err
	}
	return stream.SetCondition(slot, enc, len(ids))
}
