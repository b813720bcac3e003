package ws

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that nothing here (zstd encoders/decoders, queue waits)
// leaves goroutines behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
