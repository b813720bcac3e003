package daemon

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/demon-audio/demon/trt/trttest"
)

// Boot warmup (lifecycle.md §4): a setup failure (create, runner construction) fails the
// warmup: /readyz answers 503 naming warmup_passed, /api/server-info reports warmup not
// done with the error, the failure is logged, nothing stays allocated, and the daemon
// still serves sessions. A runtime failure after the warmup session started is logged and
// the warmup still counts as done; so does a clean warmup.
func TestWarmupOutcomes(t *testing.T) {
	for _, tc := range []struct {
		failpoints string
		done       bool
		window     string // in the reported error, when the warmup failed
	}{
		{"", true, ""},
		{"create.conditioning=error@1", false, "create.conditioning"},
		{"run.runner_init=error@1", false, "run.runner_init"},
		{"run.tick=error@3", true, ""},
	} {
		name := tc.failpoints
		if name == "" {
			name = "clean"
		}
		t.Run(name, func(t *testing.T) {
			trttest.NoLeaks(t)
			args := []string{"--device-capacity", "2GiB", "--warmup=true"}
			if tc.failpoints != "" {
				args = append(args, "--failpoints", tc.failpoints)
			}
			logs := &syncBuffer{}
			var srv *Server
			var dev *DeviceService
			var faults *FaultsService
			app := fxtest.New(t, Modules(serviceConfig(t, args...), slog.New(slog.NewTextHandler(logs, nil))),
				fx.Populate(&srv, &dev, &faults))
			app.RequireStart() // a failed warmup does not stop the boot
			defer app.RequireStop()
			base := srv.URL()

			resp, body := get(t, base+"readyz")
			var ready ReadinessStatus
			require.NoError(t, json.Unmarshal([]byte(body), &ready), body)
			resp2, body2 := get(t, base+"api/server-info")
			require.Equal(t, http.StatusOK, resp2.StatusCode)
			var info struct {
				Warmup *struct {
					Done    bool     `json:"done"`
					Error   *string  `json:"error"`
					Seconds *float64 `json:"seconds"`
				} `json:"warmup"`
			}
			require.NoError(t, json.Unmarshal([]byte(body2), &info), body2)
			require.NotNil(t, info.Warmup, "server-info reports the warmup: %s", body2)
			require.NotNil(t, info.Warmup.Seconds)
			assert.Positive(t, *info.Warmup.Seconds)
			assert.Equal(t, tc.done, info.Warmup.Done, body2)
			if tc.done {
				assert.Equal(t, http.StatusOK, resp.StatusCode, body)
				assert.True(t, ready.Ready)
				assert.Nil(t, info.Warmup.Error)
				assert.Contains(t, logs.String(), "warmup passed")
			} else {
				assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, body)
				assert.Equal(t, []string{CondWarmupPassed}, ready.Failing, "readiness names the warmup, and only it")
				require.NotNil(t, info.Warmup.Error)
				assert.Contains(t, *info.Warmup.Error, "fault injected at "+tc.window, "the original error")
				assert.Contains(t, logs.String(), `msg="warmup failed"`)
			}
			if tc.failpoints != "" {
				point := strings.SplitN(tc.failpoints, "=", 2)[0]
				assert.Positive(t, faults.Faults().Hits(point), "the warmup reached the armed point")
			}
			// Whatever happened, the warmup session left nothing on the device.
			l, err := dev.Device().Ledger()
			require.NoError(t, err)
			for _, o := range l.ByOwner {
				if strings.HasPrefix(o.Name, "session:") {
					assert.Zero(t, o.UsedBytes, "%s still holds device memory", o.Name)
					assert.Zero(t, o.LiveHandles, "%s still holds handles", o.Name)
				}
			}
			// And the daemon serves: a session starts and streams (the points fired on
			// their first hit only).
			c, _ := wsSession(t, strings.TrimSuffix(strings.TrimPrefix(base, "http://"), "/"))
			readSlices(t, c, 2)
		})
	}
}
