package ws

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// refRoot holds the reference model repositories the server tests build
// (once per footprint kind, see testRepo); removed after the run.
var refRoot string

type mainRunner struct{ m *testing.M }

func (r mainRunner) Run() int {
	code := r.m.Run()
	if refRoot != "" {
		_ = os.RemoveAll(refRoot)
	}
	return code
}

// TestMain checks that nothing here (zstd encoders/decoders, queue waits,
// connection goroutines) leaves goroutines behind.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "demon-ws-test-")
	if err != nil {
		panic(err)
	}
	refRoot = dir
	goleak.VerifyTestMain(mainRunner{m})
}
