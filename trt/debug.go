package trt

/*
#include "demon/demon.h"
*/
import "C"

// ThrowKind selects the exception DebugThrow raises inside the shim.
type ThrowKind int

// Exception kinds for DebugThrow.
const (
	ThrowStd      ThrowKind = C.DM_DEBUG_THROW_STD
	ThrowBadAlloc ThrowKind = C.DM_DEBUG_THROW_BAD_ALLOC
	ThrowDMError  ThrowKind = C.DM_DEBUG_THROW_DM_ERROR
	ThrowUnknown  ThrowKind = C.DM_DEBUG_THROW_UNKNOWN
)

// DebugThrow raises an exception inside the shim's exception barrier and returns the
// error it became. It exists to test that no exception ever crosses the C API.
func DebugThrow(kind ThrowKind) error {
	var e C.dm_error
	return check("debug throw", C.dm_debug_throw(C.int(kind), &e), &e)
}
