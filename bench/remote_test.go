package bench_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/demon-audio/demon/bench"
	"github.com/demon-audio/demon/daemon"
	"github.com/demon-audio/demon/models"
)

// TestRemoteTarget points the harness at a running demond (the production fx graph on
// loopback) the way `demon-bench --target ws://…/` does: start, churn and stream go over
// the WebSocket and read the server's /metrics; faults and tick need the in-process engine
// and are reported as skipped, with the reason.
func TestRemoteTarget(t *testing.T) {
	repo := t.TempDir()
	_, err := models.BuildReference(repo, models.BuildOptions{
		Profiles:   []models.ProfileSpec{{Name: "remote-10s", DurationS: 10, DecoderVariant: "oracle"}},
		Footprints: models.FootprintsActual,
	})
	require.NoError(t, err)
	cfg, err := daemon.LoadConfig([]string{
		"--device-capacity", "2GiB", "--listen", "127.0.0.1:0", "--control-listen", "",
		"--models", repo, "--model-profile", "remote-10s", "--data-dir", t.TempDir(),
		"--warmup=false", "--gpu-telemetry", "off",
	}, func(string) string { return "" }, &bytes.Buffer{})
	require.NoError(t, err)
	var srv *daemon.Server
	app := fxtest.New(t, daemon.Modules(cfg, slog.New(slog.DiscardHandler)), fx.Populate(&srv))
	app.RequireStart()
	defer app.RequireStop()
	target := "ws://" + strings.TrimPrefix(srv.URL(), "http://")

	out := t.TempDir()
	sum, err := bench.Run(t.Context(), bench.Config{
		Target: target, Out: out, ProfileSeconds: 10, Decoder: "oracle",
		Sessions: 2, WarmSessions: 1, Cycles: 3, Duration: 1500 * time.Millisecond, MaxK: 1,
		SearchBudget: 6 * time.Second, NoPlots: true,
	})
	require.NoError(t, err)
	assert.Equal(t, "remote", sum.Setup.Mode)
	assert.Equal(t, target, sum.Setup.Target)
	// The machine behind the figures, as the server names it.
	assert.Equal(t, "host", sum.Setup.DeviceKind)
	assert.Contains(t, sum.Setup.DeviceDesc, "host device (capacity 2147483648 bytes")
	assert.Equal(t, "cpu-ref cpu-ref-1 oracle", sum.Setup.Engine)

	require.NotNil(t, sum.Start)
	require.Len(t, sum.Start.Paths, 1, "a remote target is reached over its WebSocket only")
	p := sum.Start.Paths[0]
	assert.Equal(t, 2, p.Sessions)
	assert.Zero(t, p.Errors)
	assert.GreaterOrEqual(t, p.FirstSliceMs.P50, p.ReadyMs.P50)

	require.NotNil(t, sum.Churn)
	assert.Contains(t, sum.Churn.Source, "target /metrics")
	assert.Zero(t, sum.Churn.Errors)
	assert.Positive(t, sum.Churn.Before.LedgerBytes, "the model is resident on the target")
	assert.Equal(t, sum.Churn.Before.LedgerBytes, sum.Churn.After.LedgerBytes, "churn leaves the target's ledger at its baseline")

	require.NotNil(t, sum.Stream)
	require.NotEmpty(t, sum.Stream.Trials)
	assert.Positive(t, sum.Stream.Trials[0].Slices)

	assert.Contains(t, sum.Skipped["faults"], "in-process")
	assert.Contains(t, sum.Skipped["tick"], "in-process")
	assert.Empty(t, sum.Errors)
	md, err := os.ReadFile(filepath.Join(out, "summary.md"))
	require.NoError(t, err)
	assert.Contains(t, string(md), target)
	assert.Contains(t, string(md), "n/a (remote)", "tick readings are not faked as zeros")
	assert.Contains(t, string(md), "done by the target demond")
}

func TestMetricLabels(t *testing.T) {
	text := "# HELP demon_device_info x\n# TYPE demon_device_info gauge\n" +
		`demon_device_info{device="cuda:0 \"A\" (x, y)\\z",engine="cpu-ref 1",kind="cuda",uuid="GPU-1"} 1` + "\n"
	l, ok := bench.MetricLabels(text, "demon_device_info")
	require.True(t, ok)
	assert.Equal(t, map[string]string{"device": `cuda:0 "A" (x, y)\z`, "engine": "cpu-ref 1", "kind": "cuda", "uuid": "GPU-1"}, l)
	_, ok = bench.MetricLabels(text, "demon_build_info")
	assert.False(t, ok)
}
