package trt_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
)

// Every declared fault point is documented, and the documentation names no other point.
func TestFaultPointsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/faultpoints.md")
	require.NoError(t, err)
	declared := map[string]bool{}
	for _, p := range trt.FaultPoints() {
		declared[p] = true
		assert.Contains(t, string(doc), "| `"+p+"` |", "point %s is not in docs/faultpoints.md", p)
	}
	points := string(doc)[strings.Index(string(doc), "## Points"):]
	for _, line := range strings.Split(points, "\n") {
		if strings.HasPrefix(line, "| `") {
			name := strings.SplitN(line, "`", 3)[1]
			assert.True(t, declared[name], "docs list %s, which is not declared", name)
		}
	}
}
