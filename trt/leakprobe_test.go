//go:build leakprobe

package trt_test

import (
	"testing"

	"github.com/demon-audio/demon/trt"
)

// TestDeliberateLeak must make `go test -asan -tags leakprobe` fail with a LeakSanitizer
// report; the Makefile's sanitizer target asserts exactly that.
func TestDeliberateLeak(t *testing.T) {
	trt.DebugLeak()
}
