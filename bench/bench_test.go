package bench_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/bench"
	"github.com/demon-audio/demon/trt"
)

// TestTinyProfile runs every scenario on a tiny profile (oracle decoder, 10 s) so the
// harness cannot silently rot, and checks what it wrote.
func TestTinyProfile(t *testing.T) {
	out := t.TempDir()
	cfg := bench.Config{
		Out: out, ProfileSeconds: 10, Decoder: "oracle",
		Sessions: 2, WarmSessions: 1, Cycles: 3, FaultRounds: 2, OOMPoints: 2,
		Duration: 1500 * time.Millisecond, MaxK: 2, SearchBudget: 8 * time.Second, TickIters: 10,
	}
	if testing.Verbose() {
		cfg.Log = os.Stderr
	}
	sum, err := bench.Run(t.Context(), cfg)
	require.NoError(t, err)
	assert.Zero(t, trt.LiveHandles(), "the harness releases every native handle")

	// The outputs exist and parse.
	data, err := os.ReadFile(filepath.Join(out, "summary.json"))
	require.NoError(t, err)
	var got bench.Summary
	require.NoError(t, json.Unmarshal(data, &got))
	md, err := os.ReadFile(filepath.Join(out, "summary.md"))
	require.NoError(t, err)
	for _, h := range []string{"## start", "## churn", "## faults", "## stream", "## tick", "| CPU |", "DEMON"} {
		assert.Contains(t, string(md), h)
	}
	for _, p := range []string{"start_cdf_0.png", "churn_memory.png", "stream_lateness.png"} {
		b, err := os.ReadFile(filepath.Join(out, p))
		require.NoError(t, err, p)
		assert.True(t, strings.HasPrefix(string(b), "\x89PNG"), p)
	}
	assert.Equal(t, sum.Plots, got.Plots)
	assert.NotEmpty(t, got.Machine.CPUModel)
	assert.Positive(t, got.Machine.Cores)

	// Every scenario reported.
	require.NotNil(t, got.Start)
	require.Len(t, got.Start.Paths, 2, "websocket and session API")
	for _, p := range got.Start.Paths {
		assert.Equal(t, 2, p.Sessions, p.Path)
		assert.Zero(t, p.Errors, p.Path)
		assert.Positive(t, p.FirstSliceMs.P50, p.Path)
		assert.GreaterOrEqual(t, p.FirstSliceMs.P50, p.ReadyMs.P50, p.Path)
	}
	require.NotNil(t, got.Churn)
	assert.Zero(t, got.Churn.Errors)
	assert.Equal(t, got.Churn.Before.LedgerBytes, got.Churn.After.LedgerBytes, "churn leaves the ledger at its baseline")
	// Between sessions the ledger is at the baseline every time, not only at the end.
	if assert.Contains(t, got.Churn.SpreadBetween, "ledger_used_bytes") {
		assert.Zero(t, got.Churn.SpreadBetween["ledger_used_bytes"], "the ledger swings between sessions")
	}
	assert.Contains(t, got.Churn.SpreadBetween, "rss_bytes")
	// Sampled mid-session too: the peak shows what a live session costs.
	assert.Len(t, got.Churn.LiveSamples, len(got.Churn.Samples))
	assert.Positive(t, got.Churn.LiveLedgerBytes.P50, "a live session holds device memory")
	assert.Greater(t, got.Churn.Peak.LedgerBytes, got.Churn.Before.LedgerBytes)
	assert.GreaterOrEqual(t, got.Churn.LedgerPeakBytes, got.Churn.Peak.LedgerBytes, "the ledger's high-water mark covers the samples")
	require.NotNil(t, got.Stream)
	assert.NotEmpty(t, got.Stream.Trials)
	assert.Positive(t, got.Stream.Trials[0].Slices)
	holds := false
	for _, tr := range got.Stream.Trials {
		if !tr.Holds {
			assert.NotEmpty(t, tr.Reason, "K=%d: a trial that does not hold says why", tr.K)
			continue
		}
		holds = true
		for i, ss := range tr.Sessions {
			assert.GreaterOrEqual(t, ss.SliceRate, 0.9*got.Stream.RealTimeRate, "K=%d session %d holds: slices/s", tr.K, i)
			if tr.HoldsPace {
				assert.GreaterOrEqual(t, ss.SliceRate, 0.9*got.Stream.ExpectedRate, "K=%d session %d keeps the pace: slices/s", tr.K, i)
			}
			assert.GreaterOrEqual(t, ss.FreshRatio, 1.0, "K=%d session %d holds: fresh audio", tr.K, i)
			assert.False(t, ss.EndedEarly, "K=%d session %d holds: streamed to the end", tr.K, i)
		}
	}
	if slices.Contains(got.Plots, "stream_lateness_failing.png") {
		assert.True(t, holds, "the failing-K plot is drawn beside a holding one, never as its duplicate")
	}
	require.NotNil(t, got.Tick)
	assert.Positive(t, got.Tick.TickMs.Mean)
	assert.InDelta(t, 1, got.Tick.CgoPerTick, 0.01, "one cgo call per Stream.Tick")
	require.NotNil(t, got.Tick.Loop)

	// Faults: every point fired, nothing leaked, every retry succeeded.
	f := got.Faults
	require.NotNil(t, f)
	assert.Zero(t, f.BytesLeaked, "bytes leaked")
	assert.Zero(t, f.HandlesLeaked, "handles leaked")
	assert.Equal(t, 1.0, f.RetrySuccessRate, "retry success rate")
	assert.Equal(t, f.Attempts, f.Fired, "every armed fault fired")
	assert.Equal(t, f.Fired, f.CleanupMs.N, "the watcher saw every fault fire and the ledger come back")
	points := map[string]bool{}
	for _, c := range f.Cases {
		points[c.Point] = true
	}
	for _, p := range []string{"create.source_prepare", "create.stems", "create.stream", "create.conditioning", "create.playback",
		"create.finalize", "session.init.context", "run.runner_init", "device.alloc", "handshake.ready", "handshake.initial_buffer",
		"handshake.stem_payload", "handshake.after_register"} {
		assert.True(t, points[p], "fault point %s covered", p)
	}
	assert.Empty(t, got.Errors)
}

func TestSummarize(t *testing.T) {
	d := bench.Summarize([]float64{5, 1, 4, 2, 3})
	assert.Equal(t, bench.Dist{N: 5, Mean: 3, Min: 1, P50: 3, P90: 5, P95: 5, P99: 5, Max: 5}, d)
	assert.Equal(t, bench.Dist{}, bench.Summarize(nil))
}

func TestValidate(t *testing.T) {
	c := bench.Config{Scenarios: []string{"nope"}}
	c.Defaults()
	assert.ErrorContains(t, c.Validate(), "unknown scenario")
}
