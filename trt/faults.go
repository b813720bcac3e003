package trt

/*
#include <stdlib.h>
#include "demon/demon.h"
*/
import "C"

import (
	"sync"
	"unsafe"
)

// Faults is a registry of named fault points (docs/faultpoints.md), shared by the shim's
// native points and Go-side points: Go code calls Hit at its own points, native code hits
// the same registry through the devices it was given to.
type Faults struct {
	mu sync.Mutex
	h  *C.dm_faults
	st *handleState
}

// NewFaults creates a registry armed with spec (see ParseFaultSpec for the grammar; ""
// arms nothing). The caller must Close it after every device that uses it.
func NewFaults(spec string) (*Faults, error) {
	cs := C.CString(spec)
	defer C.free(unsafe.Pointer(cs))
	var e C.dm_error
	var h *C.dm_faults
	if err := check("create fault registry", C.dm_faults_create(cs, &h, &e), &e); err != nil {
		return nil, err
	}
	f := &Faults{h: h}
	f.st = track(f, "faults")
	return f, nil
}

// Close frees the registry. It is idempotent.
func (f *Faults) Close() error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return nil
	}
	C.dm_faults_free(f.h)
	f.h = nil
	f.st.release()
	return nil
}

// Arm applies spec ("point=error@2,other=oom", "point=off"). The whole spec is validated
// first; on error nothing changes.
func (f *Faults) Arm(spec string) error {
	cs := C.CString(spec)
	defer C.free(unsafe.Pointer(cs))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return &Error{Op: "arm faults", Code: CodeState, Msg: ErrClosed.Error()}
	}
	var e C.dm_error
	return check("arm faults", C.dm_faults_arm(f.h, cs, &e), &e)
}

// Reset disarms every point and zeroes every hit counter.
func (f *Faults) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h != nil {
		C.dm_faults_reset(f.h)
	}
}

// Hit records a hit of a Go-side point and returns the injected error if it fires.
// A nil *Faults never fires, so code paths can hit points unconditionally.
func (f *Faults) Hit(point string) error {
	if f == nil {
		return nil
	}
	cs := C.CString(point)
	defer C.free(unsafe.Pointer(cs))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return nil
	}
	var e C.dm_error
	return check(point, C.dm_faults_hit(f.h, cs, &e), &e)
}

// Hits returns how often point was hit since creation or Reset; -1 for an unknown point.
func (f *Faults) Hits(point string) int64 {
	if f == nil {
		return 0
	}
	cs := C.CString(point)
	defer C.free(unsafe.Pointer(cs))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return -1
	}
	return int64(C.dm_faults_hits(f.h, cs))
}

// handle returns the native registry for devices; nil when f is nil or closed.
func (f *Faults) handle() *C.dm_faults {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.h
}

// FaultPoints lists every declared fault point in declaration order.
func FaultPoints() []string {
	n := int(C.dm_faults_point_count())
	out := make([]string, 0, n)
	for i := range n {
		out = append(out, C.GoString(C.dm_faults_point_name(C.int(i))))
	}
	return out
}
