package procstat

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRSSGrowsWhenMemoryIsTouched(t *testing.T) {
	before := RSSBytes()
	require.Positive(t, before)
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += os.Getpagesize() {
		buf[i] = 1
	}
	assert.Greater(t, RSSBytes(), before+32<<20, "64 MiB touched")
	buf[len(buf)-1] = 1 // keep buf alive until here
}

func TestOpenFDsCountsAFile(t *testing.T) {
	before := OpenFDs()
	f, err := os.Open(os.Args[0])
	require.NoError(t, err)
	assert.Equal(t, before+1, OpenFDs())
	require.NoError(t, f.Close())
	assert.Equal(t, before, OpenFDs())
}
