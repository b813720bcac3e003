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

// DType is a tensor element type.
type DType int

// Element types.
const (
	Float32  DType = C.DM_DTYPE_FLOAT32
	BFloat16 DType = C.DM_DTYPE_BFLOAT16
	Float16  DType = C.DM_DTYPE_FLOAT16
	Int32    DType = C.DM_DTYPE_INT32
)

// String returns the sidecar name of the type ("float32", ...).
func (t DType) String() string {
	switch t {
	case Float32:
		return "float32"
	case BFloat16:
		return "bfloat16"
	case Float16:
		return "float16"
	case Int32:
		return "int32"
	}
	return fmt.Sprintf("dtype %d", int(t))
}

// Size returns the bytes per element.
func (t DType) Size() int {
	if t == Float32 || t == Int32 {
		return 4
	}
	return 2
}

// TensorDesc is an engine input or output with its optimisation profile.
type TensorDesc struct {
	Name          string
	Input         bool
	DType         DType
	Min, Opt, Max []int64
	// Symbols names each dimension: "B" (batch), "T" (latent frames), "L" (conditioning
	// tokens), "S" (audio samples) for a dynamic one, "" for a static one. Input dimensions
	// that share a symbol must be set to equal values (Execute refuses otherwise).
	Symbols []string
}

// Bytes returns the size of a buffer that holds the tensor at the given shape, in its dtype.
func (t TensorDesc) Bytes(dims ...int64) uint64 {
	n := uint64(t.DType.Size())
	for _, d := range dims {
		n *= uint64(d)
	}
	return n
}

// EngineOptions configure LoadEngine; they come from the engine's validated sidecar.
type EngineOptions struct {
	Path           string
	Component      string
	Backend        string
	BackendVersion string
	// Owner is the ledger owner tag of the engine's resident memory ("model:decoder").
	Owner string
	// FootprintBytes is the declared resident size; ContextBytes the declared activation
	// size of one context. Zero means "what the engine needs".
	FootprintBytes uint64
	ContextBytes   uint64
}

// Engine is a loaded engine, shared by every context made from it.
type Engine struct {
	mu   sync.RWMutex
	h    *C.dm_engine
	st   *handleState
	opts EngineOptions
	io   []TensorDesc
}

// LoadEngine loads an engine onto a device.
func LoadEngine(d *Device, opts EngineOptions) (*Engine, error) {
	strs := []*C.char{C.CString(opts.Path), C.CString(opts.Component), C.CString(opts.Backend), C.CString(opts.BackendVersion), C.CString(opts.Owner)}
	defer func() {
		for _, s := range strs {
			C.free(unsafe.Pointer(s))
		}
	}()
	copts := C.dm_engine_options{
		path: strs[0], component: strs[1], backend: strs[2], backend_version: strs[3], owner: strs[4],
		footprint_bytes: C.uint64_t(opts.FootprintBytes),
		context_bytes:   C.uint64_t(opts.ContextBytes),
	}
	op := "load " + opts.Component + " engine"
	var e *Engine
	err := d.use(op, func(h *C.dm_device) error {
		var ce C.dm_error
		var eh *C.dm_engine
		if err := check(op, C.dm_engine_load(h, &copts, &eh, &ce), &ce); err != nil {
			return err
		}
		io, err := engineIO(op, eh)
		if err != nil {
			C.dm_engine_free(&eh)
			return err
		}
		e = &Engine{h: eh, opts: opts, io: io}
		e.st = track(e, "engine")
		return nil
	})
	return e, err
}

// engineIO reads a loaded engine's I/O table.
func engineIO(op string, h *C.dm_engine) ([]TensorDesc, error) {
	return readIO(int(C.dm_engine_io_count(h)), func(i int) (TensorDesc, error) {
		var d C.dm_tensor_desc
		var ce C.dm_error
		if err := check(op, C.dm_engine_io(h, C.int(i), &d, &ce), &ce); err != nil {
			return TensorDesc{}, err
		}
		return tensorDesc(&d), nil
	})
}

// readIO reads n tensor descriptions. An entry that cannot be read fails the whole table:
// a table with a hole would describe another engine.
func readIO(n int, read func(i int) (TensorDesc, error)) ([]TensorDesc, error) {
	out := make([]TensorDesc, 0, n)
	for i := range n {
		t, err := read(i)
		if err != nil {
			return nil, fmt.Errorf("engine I/O table, tensor %d of %d: %w", i, n, err)
		}
		out = append(out, t)
	}
	return out, nil
}

func tensorDesc(d *C.dm_tensor_desc) TensorDesc {
	t := TensorDesc{Name: C.GoString(&d.name[0]), Input: d.is_input != 0, DType: DType(d.dtype)}
	for r := range int(d.rank) {
		t.Min = append(t.Min, int64(d.min[r]))
		t.Opt = append(t.Opt, int64(d.opt[r]))
		t.Max = append(t.Max, int64(d.max[r]))
		t.Symbols = append(t.Symbols, C.GoString(&d.symbol[r][0]))
	}
	return t
}

// InspectEngine returns the I/O table the engine file would have once loaded, read from
// the file's header alone: it checks what LoadEngine checks before allocating (component,
// backend, version, container framing; the payload checksum is left to the load) and needs
// no device, so a model repository can validate everything before allocating anything.
// Owner and the footprints are ignored.
func InspectEngine(opts EngineOptions) ([]TensorDesc, error) {
	strs := []*C.char{C.CString(opts.Path), C.CString(opts.Component), C.CString(opts.Backend), C.CString(opts.BackendVersion)}
	defer func() {
		for _, s := range strs {
			C.free(unsafe.Pointer(s))
		}
	}()
	copts := C.dm_engine_options{path: strs[0], component: strs[1], backend: strs[2], backend_version: strs[3]}
	op := "inspect " + opts.Component + " engine"
	descs := make([]C.dm_tensor_desc, 16) // every engine has a handful: one call in practice
	for {
		var n C.int
		var ce C.dm_error
		if err := check(op, C.dm_engine_inspect(&copts, &descs[0], C.int(len(descs)), &n, &ce), &ce); err != nil {
			return nil, err
		}
		if int(n) <= len(descs) {
			return readIO(int(n), func(i int) (TensorDesc, error) { return tensorDesc(&descs[i]), nil })
		}
		descs = make([]C.dm_tensor_desc, int(n))
	}
}

// Close frees the engine handle. It is idempotent.
func (e *Engine) Close() error {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.h == nil {
		return nil
	}
	C.dm_engine_free(&e.h) // frees the handle and sets e.h to nil
	e.st.release()
	return nil
}

// Component returns the engine's component name.
func (e *Engine) Component() string { return e.opts.Component }

// IO returns the engine's inputs and outputs.
func (e *Engine) IO() []TensorDesc { return e.io }

// ContextBytes returns the activation bytes one context allocates.
func (e *Engine) ContextBytes() uint64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return uint64(C.dm_engine_context_bytes(e.h))
}

// useEngine runs fn with the native handle, or returns ErrClosed.
func (e *Engine) useEngine(op string, fn func(h *C.dm_engine) error) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.h == nil {
		return errClosed(op, "engine")
	}
	return fn(e.h)
}

// NewContext creates an execution context whose activation memory is accounted to owner.
func (e *Engine) NewContext(owner string) (*Context, error) {
	co := C.CString(owner)
	defer C.free(unsafe.Pointer(co))
	op := "create " + e.opts.Component + " context"
	var c *Context
	err := e.useEngine(op, func(h *C.dm_engine) error {
		var ce C.dm_error
		var ch *C.dm_context
		if err := check(op, C.dm_context_create(h, co, &ch, &ce), &ce); err != nil {
			return err
		}
		c = &Context{h: ch, component: e.opts.Component}
		c.st = track(c, "context")
		return nil
	})
	return c, err
}

// Context is an engine execution context: activation memory, shapes and bindings.
// One goroutine at a time may use it.
//
// The native context keeps the raw device address of every bound buffer and reads or
// writes it only in Execute. So that a Buffer closed after Bind can never be touched, the
// context remembers which Buffer each tensor is bound to, and Execute checks that all of
// them are still open and keeps them open (holds their locks) while the engine runs.
// Closing a buffer before its context stays legal (the session's rollbacks do that); only
// executing with it is refused.
type Context struct {
	mu        sync.Mutex
	h         *C.dm_context
	st        *handleState
	component string
	bound     []binding // at most one per tensor name; guarded by mu
}

// binding is one tensor's bound buffer, as the native context last accepted it.
type binding struct {
	name string
	buf  *Buffer
}

// Close frees the context. It is idempotent.
func (c *Context) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h == nil {
		return nil
	}
	C.dm_context_free(&c.h) // frees the handle and sets c.h to nil
	c.bound = nil
	c.st.release()
	return nil
}

func (c *Context) with(op string, fn func(h *C.dm_context, name *C.char) error, name string) error {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h == nil {
		return errClosed(op, "context")
	}
	return fn(c.h, cn)
}

// SetShape sets an input's shape.
func (c *Context) SetShape(name string, dims ...int64) error {
	if len(dims) == 0 {
		return &Error{Op: "set shape " + name, Code: CodeInvalidArgument, Msg: "no dimensions"}
	}
	return c.with("set shape "+name, func(h *C.dm_context, cn *C.char) error {
		var ce C.dm_error
		return check("set shape "+name, C.dm_context_set_shape(h, cn, (*C.int64_t)(unsafe.Pointer(&dims[0])), C.int(len(dims)), &ce), &ce)
	}, name)
}

// Bind binds a tensor to a buffer. The buffer may be closed before the context, but
// Execute refuses (ErrState) while any bound buffer is closed: rebind the tensor first.
func (c *Context) Bind(name string, b *Buffer) error {
	op := "bind " + name
	if b == nil {
		return &Error{Op: op, Code: CodeInvalidArgument, Msg: "nil buffer"}
	}
	// Lock order: context, then buffer, as in Execute.
	return c.with(op, func(h *C.dm_context, cn *C.char) error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.h == nil {
			return errClosed(op, "buffer")
		}
		var ce C.dm_error
		if err := check(op, C.dm_context_bind(h, cn, b.h, &ce), &ce); err != nil {
			// The native binding of name is unchanged (or cleared): keeping the old record
			// only makes Execute's check stricter.
			return err
		}
		for i := range c.bound {
			if c.bound[i].name == name {
				c.bound[i].buf = b
				return nil
			}
		}
		c.bound = append(c.bound, binding{name: name, buf: b})
		return nil
	}, name)
}

// Execute runs the engine. It fails with ErrState, before anything runs, if a tensor is
// bound to a buffer that has since been closed; bound buffers cannot be closed while it
// runs (their Close waits).
func (c *Context) Execute() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	op := "execute " + c.component
	if c.h == nil {
		return errClosed(op, "context")
	}
	if err := c.lockBound(op); err != nil {
		return err
	}
	defer c.unlockBound(len(c.bound))
	var ce C.dm_error
	return check(op, C.dm_context_execute(c.h, &ce), &ce)
}

// boundBefore reports whether c.bound[i]'s buffer is also bound at an earlier index, so
// that a buffer bound to several tensors is locked once. (A handful of tensors: a scan is
// cheaper than a set and allocates nothing.)
func (c *Context) boundBefore(i int) bool {
	for j := range i {
		if c.bound[j].buf == c.bound[i].buf {
			return true
		}
	}
	return false
}

// lockBound locks every distinct bound buffer, or none: if one is closed it unlocks those
// already locked and returns an error naming the tensor. c.mu must be held.
func (c *Context) lockBound(op string) error {
	for i, bd := range c.bound {
		if c.boundBefore(i) {
			continue
		}
		bd.buf.mu.Lock()
		if bd.buf.h == nil {
			bd.buf.mu.Unlock()
			c.unlockBound(i)
			return &Error{Op: op, Code: CodeState, Msg: "tensor " + bd.name + " is bound to a closed buffer (rebind it)"}
		}
	}
	return nil
}

// unlockBound unlocks the distinct buffers among c.bound[:n]. c.mu must be held.
func (c *Context) unlockBound(n int) {
	for i := range n {
		if !c.boundBefore(i) {
			c.bound[i].buf.mu.Unlock()
		}
	}
}

// Shape returns a tensor's current shape (nil if unset).
func (c *Context) Shape(name string) ([]int64, error) {
	var out []int64
	err := c.with("shape "+name, func(h *C.dm_context, cn *C.char) error {
		var dims [C.DM_MAX_RANK]C.int64_t
		var rank C.int
		var ce C.dm_error
		if err := check("shape "+name, C.dm_context_shape(h, cn, &dims[0], &rank, &ce), &ce); err != nil {
			return err
		}
		for i := range int(rank) {
			out = append(out, int64(dims[i]))
		}
		return nil
	}, name)
	return out, err
}

// ReferenceOptions describe a reference (cpu-ref) engine file to write.
type ReferenceOptions struct {
	Component string
	Variant   string // decoder: "tiny-dit" or "oracle"
	Seed      uint64
	DurationS int
	// IOPrecision is the decoder's I/O layout: "fp32" (or "") for float32 tensors, "mixed"
	// for DEMON's 2B layout (bfloat16 hidden_states, encoder_hidden_states, context_latents
	// and velocity; float32 timestep). The math is fp32 either way.
	IOPrecision string
}

// WriteReferenceEngine writes a reference engine file.
func WriteReferenceEngine(opts ReferenceOptions, path string) error {
	cc, cv, cp, cio := C.CString(opts.Component), C.CString(opts.Variant), C.CString(path), C.CString(opts.IOPrecision)
	defer C.free(unsafe.Pointer(cc))
	defer C.free(unsafe.Pointer(cv))
	defer C.free(unsafe.Pointer(cp))
	defer C.free(unsafe.Pointer(cio))
	ro := C.dm_reference_options{component: cc, variant: cv, seed: C.uint64_t(opts.Seed), duration_s: C.int(opts.DurationS), io_precision: cio}
	var ce C.dm_error
	return check("write reference "+opts.Component, C.dm_reference_engine_write(&ro, cp, &ce), &ce)
}

// CheckEngineFile validates an engine file's container (magic, version, sizes, checksum)
// without loading it.
func CheckEngineFile(data []byte) error {
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	var ce C.dm_error
	return check("check engine file", C.dm_engine_file_check(p, C.size_t(len(data)), &ce), &ce)
}
