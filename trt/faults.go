package trt

/*
#include <stdlib.h>
#include "demon/demon.h"
*/
import "C"

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Faults is a registry of named fault points (docs/faultpoints.md). The shim owns the
// registry and its spec parser; native points fire inside the shim through the devices the
// registry is given to. Go-side points are hit through this Go twin: it mirrors the arming
// of every point after each Arm/Reset and counts Go-side hits itself, so hitting a point
// from Go (even on a hot path, once per tick) costs no cgo call and no allocation unless
// the point fires.
type Faults struct {
	mu     sync.Mutex
	h      *C.dm_faults
	st     *handleState
	points map[string]*goPoint // every declared point; the map itself never changes
	// declared holds the same points in declaration order: declared[i] is the shim's point
	// i (dm_faults_point_name), so syncing the arming needs no Go strings in C.
	declared []*goPoint
	// rearmed is closed and replaced by Arm and Reset: it releases hung Go-side points.
	rearmed chan struct{}
}

// Fault actions, as the shim numbers them.
const (
	actionOff int32 = iota
	actionError
	actionOOM
	actionHang
)

type goPoint struct {
	hits   atomic.Int64
	action atomic.Int32
	nth    atomic.Int64
}

// NewFaults creates a registry armed with spec ("point=action[@N],..."; "" arms nothing).
// The caller must Close it; devices created with it share the native registry, so the
// order of closing does not matter.
func NewFaults(spec string) (*Faults, error) {
	cs := C.CString(spec)
	defer C.free(unsafe.Pointer(cs))
	var e C.dm_error
	var h *C.dm_faults
	if err := check("create fault registry", C.dm_faults_create(cs, &h, &e), &e); err != nil {
		return nil, err
	}
	f := &Faults{h: h, points: map[string]*goPoint{}, rearmed: make(chan struct{})}
	for _, name := range FaultPoints() {
		p := &goPoint{}
		f.points[name] = p
		f.declared = append(f.declared, p)
	}
	f.syncArmingLocked()
	f.st = track(f, "faults")
	return f, nil
}

// syncArmingLocked copies the shim's arming of every point into the Go twin. It names
// each point by the shim's own static string (dm_faults_point_name), so it allocates
// nothing in C and has nothing to free.
func (f *Faults) syncArmingLocked() {
	for i, p := range f.declared {
		var action C.int
		var nth C.int64_t
		var e C.dm_error
		if C.dm_faults_arming(f.h, C.dm_faults_point_name(C.int(i)), &action, &nth, &e) == C.DM_OK {
			p.action.Store(int32(action))
			p.nth.Store(int64(nth))
		}
	}
	close(f.rearmed)
	f.rearmed = make(chan struct{})
}

// Close frees the registry handle. It is idempotent. Devices created with it keep the
// native registry alive, disarmed: nothing can re-arm it, so nothing fires any more, and
// hits hung on it (native or Go-side) are released.
func (f *Faults) Close() error {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return nil
	}
	C.dm_faults_free(&f.h) // frees the handle and sets f.h to nil
	for _, p := range f.points {
		p.action.Store(actionOff)
	}
	close(f.rearmed)
	f.rearmed = make(chan struct{})
	f.st.release()
	return nil
}

// Arm applies spec ("point=error@2,other=oom", "point=hang", "point=off"). The whole spec
// is validated first; on error nothing changes.
func (f *Faults) Arm(spec string) error {
	cs := C.CString(spec)
	defer C.free(unsafe.Pointer(cs))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return errClosed("arm faults", "fault registry")
	}
	var e C.dm_error
	if err := check("arm faults", C.dm_faults_arm(f.h, cs, &e), &e); err != nil {
		return err
	}
	f.syncArmingLocked()
	return nil
}

// Reset disarms every point and zeroes every hit counter.
func (f *Faults) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return
	}
	C.dm_faults_reset(f.h)
	for _, p := range f.points {
		p.hits.Store(0)
	}
	f.syncArmingLocked()
}

// Hit records a hit of a Go-side point and returns the injected error if it fires (a
// "hang" point blocks until the registry is re-armed, reset or closed, at most 10 minutes,
// and then returns nil). A nil *Faults never fires, so code paths can hit points
// unconditionally.
func (f *Faults) Hit(point string) error {
	if f == nil {
		return nil
	}
	p, ok := f.points[point]
	if !ok {
		return &Error{Op: point, Code: CodeNotFound, Msg: "unknown fault point " + point}
	}
	n := p.hits.Add(1)
	action := p.action.Load()
	if action == actionOff {
		return nil
	}
	if nth := p.nth.Load(); nth != 0 && nth != n {
		return nil
	}
	switch action {
	case actionOOM:
		return &Error{Op: point, Code: CodeOutOfMemory, Msg: fmt.Sprintf("out of memory (injected at fault point %s, hit %d)", point, n)}
	case actionHang:
		f.hang(p, n)
		return nil
	}
	return &Error{Op: point, Code: CodeFaultInjected, Msg: fmt.Sprintf("fault injected at %s (hit %d)", point, n)}
}

// maxHang caps a "hang" like the native registry does: a forgotten hang point cannot park
// a goroutine forever.
var maxHang = 10 * time.Minute

// hang blocks hit n of p until the registry is re-armed, reset or closed, at most maxHang.
// The arming read lock-free in Hit may already be stale: Arm, Reset and Close change it and
// replace f.rearmed under f.mu, so the decision is re-made under f.mu, together with
// reading the channel. If the point no longer hangs at this hit, the change that disarmed
// it has happened and Hit returns; if it still does, the channel read here is the one the
// next change closes.
func (f *Faults) hang(p *goPoint, n int64) {
	f.mu.Lock()
	nth := p.nth.Load()
	if p.action.Load() != actionHang || (nth != 0 && nth != n) {
		f.mu.Unlock()
		return
	}
	rearmed := f.rearmed
	f.mu.Unlock()
	limit := time.NewTimer(maxHang)
	defer limit.Stop()
	select {
	case <-rearmed:
	case <-limit.C:
	}
}

// Hits returns how often point was hit (natively and from Go) since creation or Reset;
// -1 for an unknown point.
func (f *Faults) Hits(point string) int64 {
	if f == nil {
		return 0
	}
	p, ok := f.points[point]
	if !ok {
		return -1
	}
	cs := C.CString(point)
	defer C.free(unsafe.Pointer(cs))
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return -1
	}
	return p.hits.Load() + int64(C.dm_faults_hits(f.h, cs))
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
