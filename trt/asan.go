//go:build asan

package trt

// `go test -asan` instruments the C preamble only; this instruments the C++ shim too.

/*
#cgo CXXFLAGS: -fsanitize=address -fno-omit-frame-pointer
*/
import "C"
