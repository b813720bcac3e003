package session

import (
	"fmt"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
)

// engineSession is a session's share of the shared model: a reference on it and the
// session's own execution contexts. Its constructor initialises close-safe fields first and
// cleans up on any failure; Close is idempotent and nil-safe.
type engineSession struct {
	model      *models.Model
	ref        *models.Ref // this session's reference on model; nil once released
	decoderCtx *trt.Context
}

func newEngineSession(model *models.Model, owner string) (*engineSession, error) {
	ref, err := model.Acquire()
	if err != nil {
		return nil, fmt.Errorf("engine session: %w", err)
	}
	es := &engineSession{model: model, ref: ref}
	ctx, err := model.Engine(models.Decoder).NewContext(owner)
	if err != nil {
		_ = es.Close()
		return nil, fmt.Errorf("engine session: %w", err)
	}
	es.decoderCtx = ctx
	return es, nil
}

// Close frees the contexts, then releases the model reference.
func (es *engineSession) Close() error {
	if es == nil {
		return nil
	}
	err := es.decoderCtx.Close()
	es.decoderCtx = nil
	es.ref.Release() // nil-safe and idempotent
	es.ref = nil
	return err
}
