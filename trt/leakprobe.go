//go:build leakprobe

package trt

// The leak probe proves the sanitizer net works: built only with -tags leakprobe, it adds
// a shim function that leaks a C++ allocation, which LeakSanitizer must report
// (`make test` runs it and requires the report).

/*
#cgo CXXFLAGS: -DDM_LEAK_PROBE
int dm_debug_leak(void);
*/
import "C"

// DebugLeak leaks a small C++ allocation inside the shim.
func DebugLeak() { C.dm_debug_leak() }
