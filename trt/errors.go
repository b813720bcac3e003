package trt

/*
#include "demon/demon.h"
*/
import "C"

import (
	"errors"
	"fmt"
)

// Code is a status code of the native shim (dm_status in demon.h).
type Code int

// The shim's status codes.
const (
	CodeOK              Code = C.DM_OK
	CodeInvalidArgument Code = C.DM_ERR_INVALID_ARGUMENT
	CodeOutOfMemory     Code = C.DM_ERR_OUT_OF_MEMORY
	CodeNotFound        Code = C.DM_ERR_NOT_FOUND
	CodeCorrupt         Code = C.DM_ERR_CORRUPT
	CodeMismatch        Code = C.DM_ERR_MISMATCH
	CodeUnsupported     Code = C.DM_ERR_UNSUPPORTED
	CodeFaultInjected   Code = C.DM_ERR_FAULT_INJECTED
	CodeState           Code = C.DM_ERR_STATE
	CodeCUDA            Code = C.DM_ERR_CUDA
	CodeInternal        Code = C.DM_ERR_INTERNAL
)

var codeNames = map[Code]string{
	CodeOK:              "ok",
	CodeInvalidArgument: "invalid argument",
	CodeOutOfMemory:     "out of memory",
	CodeNotFound:        "not found",
	CodeCorrupt:         "corrupt",
	CodeMismatch:        "mismatch",
	CodeUnsupported:     "unsupported",
	CodeFaultInjected:   "fault injected",
	CodeState:           "invalid state",
	CodeCUDA:            "cuda error",
	CodeInternal:        "internal error",
}

// String returns the code's name, e.g. "out of memory".
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("status %d", int(c))
}

// Sentinel errors that errors.Is matches against an *Error of the same code.
var (
	ErrInvalidArgument = errors.New("invalid argument")
	ErrOutOfMemory     = errors.New("out of memory")
	ErrNotFound        = errors.New("not found")
	ErrCorrupt         = errors.New("corrupt")
	ErrMismatch        = errors.New("mismatch")
	ErrUnsupported     = errors.New("unsupported")
	ErrFaultInjected   = errors.New("fault injected")
	ErrState           = errors.New("invalid state")
	ErrCUDA            = errors.New("cuda error")
	ErrInternal        = errors.New("internal error")
	// ErrClosed is returned by methods called on a handle after Close (and by methods
	// given a closed handle as an argument). Such an error also matches ErrState.
	ErrClosed = errors.New("handle is closed")
)

var sentinels = map[Code]error{
	CodeInvalidArgument: ErrInvalidArgument,
	CodeOutOfMemory:     ErrOutOfMemory,
	CodeNotFound:        ErrNotFound,
	CodeCorrupt:         ErrCorrupt,
	CodeMismatch:        ErrMismatch,
	CodeUnsupported:     ErrUnsupported,
	CodeFaultInjected:   ErrFaultInjected,
	CodeState:           ErrState,
	CodeCUDA:            ErrCUDA,
	CodeInternal:        ErrInternal,
}

// Error is a failure reported by the native shim.
type Error struct {
	// Op is the operation that failed, e.g. "alloc buffer".
	Op string
	// Code is the shim's status code.
	Code Code
	// Msg is the shim's message.
	Msg string
	// closed marks a use-after-Close (errClosed): the error also matches ErrClosed.
	closed bool
}

// Error implements error.
func (e *Error) Error() string { return e.Op + ": " + e.Msg }

// Is reports whether target is the sentinel for e's code, so callers can write
// errors.Is(err, trt.ErrOutOfMemory); a use-after-Close also matches ErrClosed.
func (e *Error) Is(target error) bool {
	if e.closed && target == ErrClosed {
		return true
	}
	s, ok := sentinels[e.Code]
	return ok && s == target
}

// errClosed is the error of op on a closed handle of the given kind ("buffer",
// "device", ...): the one place such errors are made, so every one matches both ErrClosed
// and ErrState.
func errClosed(op, kind string) *Error {
	return &Error{Op: op, Code: CodeState, Msg: kind + " " + ErrClosed.Error(), closed: true}
}

// NewError builds an *Error for Go-side failures that should match the same sentinels
// as native ones (for example a Go-side fault point).
func NewError(op string, code Code, msg string) *Error {
	return &Error{Op: op, Code: code, Msg: msg}
}

// check converts a shim status and its error report into a Go error: the one place
// where that conversion happens.
func check(op string, rc C.int, e *C.dm_error) error {
	if rc == C.DM_OK {
		return nil
	}
	msg := C.GoString(&e.msg[0])
	if msg == "" {
		msg = Code(rc).String()
	}
	return &Error{Op: op, Code: Code(rc), Msg: msg}
}
