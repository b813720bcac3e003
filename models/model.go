package models

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/demon-audio/demon/trt"
)

// Model is every engine of one profile, loaded on a device and shared by sessions.
// It is reference counted: the loader holds the first reference (dropped by Model.Release),
// each session one more (a Ref from Acquire); the engines are freed, in reverse load order,
// when the last reference is released. Every reference is released through its own holder's
// handle, idempotently, so a holder releasing twice can never drop someone else's
// reference and unload a model still in use.
type Model struct {
	Profile Profile

	mu      sync.Mutex
	refs    int
	loader  *Ref // the reference LoadModel returns the model with
	engines map[string]*trt.Engine
	order   []string
	metas   map[string]Metadata
}

// BackendSupport reports whether this build can load engines of a backend.
func BackendSupport(backend string) error {
	switch backend {
	case BackendCPURef:
		return nil
	case BackendTensorRT:
		return fmt.Errorf("%w: a TensorRT engine, and this build has no TensorRT backend (it is a seam, not yet implemented: see README, \"Building the shim\")", ErrUnsupported)
	}
	return fmt.Errorf("%w: unknown backend %q", ErrUnsupported, backend)
}

// LoadOptions configure LoadModel.
type LoadOptions struct {
	// Log receives progress lines; nil discards them.
	Log *slog.Logger
	// Progress, if set, is called before each component loads (e.g. to extend a systemd
	// start timeout).
	Progress func(component string)
}

// LoadModel validates profile p's engines (before allocating anything), then loads them in
// order. If any load fails, everything loaded so far is freed in reverse order and the
// original error is returned. The returned model holds one reference.
func LoadModel(dev *trt.Device, repo *Repository, p Profile, opts LoadOptions) (*Model, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	refs, err := repo.Resolve(p, BackendSupport)
	if err != nil {
		return nil, err
	}
	m := &Model{Profile: p, refs: 1, engines: map[string]*trt.Engine{}, metas: map[string]Metadata{}}
	m.loader = &Ref{m: m}
	for _, ref := range refs {
		if opts.Progress != nil {
			opts.Progress(ref.Component)
		}
		log.Info("loading engine", "component", ref.Component, "engine", ref.Name, "footprint_bytes", ref.Meta.DeviceFootprintBytes)
		eng, err := trt.LoadEngine(dev, trt.EngineOptions{
			Path:           ref.Path,
			Component:      ref.Component,
			Backend:        ref.Meta.Backend,
			BackendVersion: ref.Meta.BackendVersion,
			Owner:          "model:" + ref.Component,
			FootprintBytes: ref.Meta.DeviceFootprintBytes,
			ContextBytes:   ref.Meta.ContextFootprintBytes,
		})
		if err == nil {
			// Resolve compared the sidecar with the file's header; this compares it with the
			// engine as loaded, in case the file changed in between.
			if err = crossCheck(ref, eng.IO()); err != nil {
				_ = eng.Close()
			}
		}
		if err != nil {
			m.unload()
			return nil, fmt.Errorf("load model profile %s: %s: %w", p.Name, ref.Name, err)
		}
		m.engines[ref.Component] = eng
		m.order = append(m.order, ref.Component)
		m.metas[ref.Component] = ref.Meta
	}
	log.Info("model loaded", "profile", p.Name, "engines", len(m.order))
	return m, nil
}

// crossCheck makes sure the sidecar describes the engine that was actually loaded.
func crossCheck(ref EngineRef, io []trt.TensorDesc) error {
	if len(io) != len(ref.Meta.Tensors) {
		return fmt.Errorf("%w: sidecar lists %d tensors, the engine has %d", ErrMismatch, len(ref.Meta.Tensors), len(io))
	}
	for _, t := range io {
		spec, ok := ref.Meta.Tensor(t.Name)
		if !ok {
			return fmt.Errorf("%w: engine tensor %s is not in the sidecar", ErrMismatch, t.Name)
		}
		if spec.DType != t.DType.String() || (spec.IO == "input") != t.Input || len(spec.Dims) != len(t.Min) {
			return fmt.Errorf("%w: tensor %s: sidecar says %s %s rank %d, engine has %s input=%v rank %d", ErrMismatch, t.Name, spec.IO, spec.DType, len(spec.Dims), t.DType, t.Input, len(t.Min))
		}
		for i, d := range spec.Dims {
			sym := ""
			if i < len(t.Symbols) {
				sym = t.Symbols[i]
			}
			if d.Min != t.Min[i] || d.Opt != t.Opt[i] || d.Max != t.Max[i] || d.Symbol != sym {
				return fmt.Errorf("%w: tensor %s dim %d: sidecar profile %d/%d/%d %q, engine %d/%d/%d %q", ErrMismatch, t.Name, i, d.Min, d.Opt, d.Max, d.Symbol, t.Min[i], t.Opt[i], t.Max[i], sym)
			}
		}
	}
	return nil
}

// ErrReleased is returned by Acquire on a model whose last reference is gone.
var ErrReleased = errors.New("model released")

// Ref is one holder's reference on a Model, from Acquire. Its Release is idempotent.
type Ref struct {
	m        *Model
	released bool // guarded by m.mu
}

// Acquire takes a reference for a session (or any holder besides the loader). The holder
// gives it back with the returned Ref's Release.
func (m *Model) Acquire() (*Ref, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refs == 0 {
		return nil, ErrReleased
	}
	m.refs++
	return &Ref{m: m}, nil
}

// Release drops this holder's reference; the model's last one frees every engine. Extra
// calls, and calls on a nil Ref, are no-ops.
func (r *Ref) Release() {
	if r == nil {
		return
	}
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.released {
		return
	}
	r.released = true
	m.refs--
	if m.refs == 0 {
		m.unloadLocked()
	}
}

// Release drops the loader's reference (the one LoadModel returned the model with); the
// last reference frees every engine. Extra calls are no-ops: they never drop a reference
// a session holds.
func (m *Model) Release() { m.loader.Release() }

// Refs returns the number of live references.
func (m *Model) Refs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.refs
}

// Engine returns the loaded engine of a component (nil after release).
func (m *Model) Engine(component string) *trt.Engine {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.engines[component]
}

// Metadata returns a component's sidecar.
func (m *Model) Metadata(component string) Metadata {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.metas[component]
}

// unload frees a model LoadModel is abandoning: no reference has been handed out yet.
func (m *Model) unload() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refs = 0
	m.loader.released = true
	m.unloadLocked()
}

func (m *Model) unloadLocked() {
	for _, c := range slices.Backward(m.order) {
		_ = m.engines[c].Close() // engine Close never fails
		delete(m.engines, c)
	}
	m.order = nil
}
