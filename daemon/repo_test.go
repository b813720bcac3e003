package daemon

import (
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/models"
)

var (
	testRepoOnce sync.Once
	testRepoDir  string
	testRepoErr  error
)

// testRepo is a small reference repository shared by the package's tests: a 10 s profile
// with the oracle decoder and actual (small) footprints, so modules start in milliseconds.
func testRepo(t testing.TB) string {
	t.Helper()
	testRepoOnce.Do(func() {
		testRepoDir, testRepoErr = os.MkdirTemp("", "demon-daemon-test-models-")
		if testRepoErr == nil {
			_, testRepoErr = models.BuildReference(testRepoDir, models.BuildOptions{
				Profiles:   []models.ProfileSpec{{Name: "test-10s", DurationS: 10, DecoderVariant: "oracle"}},
				Footprints: models.FootprintsActual,
			})
		}
	})
	require.NoError(t, testRepoErr)
	return testRepoDir
}
