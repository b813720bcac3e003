// Package trt is demon's binding to its native shim (native/include/demon/demon.h): the
// only Go package that imports "C". Each native handle has one Go type with an idempotent
// Close; status codes become *Error values in one place (check); nothing is freed by a
// finalizer.
package trt

/*
#cgo CPPFLAGS: -I${SRCDIR}/../native/include
#cgo CXXFLAGS: -std=c++17 -O2 -Wno-psabi -I${SRCDIR}/../native/src -I${SRCDIR}/../native/include
#cgo LDFLAGS: -lpthread
#include <stdlib.h>
#include "demon/demon.h"
*/
import "C"

import (
	// The shim's sources, so that edits under native/ invalidate the build cache.
	_ "github.com/demon-audio/demon/native"
)

// Version returns the shim's version string.
func Version() string { return C.GoString(C.dm_version()) }
