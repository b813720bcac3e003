package trt_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/demon-audio/demon/trt"
)

// handleCheckedRun runs the tests and then fails the run if any native handle created
// through trt is still open: the package-wide form of trttest.NoLeaks, which catches a
// test that forgot it.
type handleCheckedRun struct{ m *testing.M }

func (r handleCheckedRun) Run() int {
	code := r.m.Run()
	if n := trt.LiveHandles(); n != 0 {
		fmt.Fprintf(os.Stderr, "trt: %d native handles still open after all tests (trt.LiveHandles)\n", n)
		return 1
	}
	return code
}

// TestMain checks, after every test has run, that no native handle is left open and that
// no goroutine (a hung fault hit, a racing Execute) is left behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(handleCheckedRun{m}) }
