package trt

import (
	"log/slog"
	"os"
	"runtime"
	"sync/atomic"
)

// live counts open handles of every type created through this package.
var live atomic.Int64

// LiveHandles returns the number of handles created by this package and not yet closed.
// Tests assert it is zero after every case (see trttest.NoLeaks).
func LiveHandles() int64 { return live.Load() }

// debugHandles turns on leak reports: a handle that becomes unreachable without Close
// is logged. It never frees anything; correctness never depends on the garbage collector.
var debugHandles = os.Getenv("DEMON_DEBUG_HANDLES") != ""

// handleState is shared by a handle and its (optional) leak report.
type handleState struct {
	kind   string
	closed atomic.Bool
}

// track counts a new handle and, in debug mode, arranges a report if it leaks.
func track[T any](obj *T, kind string) *handleState {
	live.Add(1)
	st := &handleState{kind: kind}
	if debugHandles {
		runtime.AddCleanup(obj, func(s *handleState) {
			if !s.closed.Load() {
				slog.Warn("native handle leaked: garbage collected without Close", "kind", s.kind)
			}
		}, st)
	}
	return st
}

// release marks the handle closed; it returns false if it already was.
func (s *handleState) release() bool {
	if s == nil || !s.closed.CompareAndSwap(false, true) {
		return false
	}
	live.Add(-1)
	return true
}
