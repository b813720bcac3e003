package daemon

import (
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitExit waits for the binary to exit within limit and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd, limit time.Duration, logs *syncBuffer) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		require.NoError(t, err)
		return 0
	case <-time.After(limit):
		t.Fatalf("demond did not exit within %s\n%s", limit, logs.String())
		return -1
	}
}

// awaitLog waits until the log contains want.
func awaitLog(t *testing.T, logs *syncBuffer, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q in the log\n%s", want, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SIGTERM while the boot warmup runs (slowed down by a long tick interval) ends start-up at
// once: the warmup sees its context cancelled, every started module is stopped, and demond
// exits 0 with the ledger at zero instead of finishing start-up first.
func TestBinarySignalDuringStartUnwinds(t *testing.T) {
	cmd, _, msgs, logs := runDemond(t, nil, "--warmup=true", "--tick-interval", "3s")
	awaitLog(t, logs, "model loaded", 60*time.Second)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	sent := time.Now()
	code := waitExit(t, cmd, 20*time.Second, logs)
	out := logs.String()
	assert.Equal(t, 0, code, out)
	assert.Less(t, time.Since(sent), 3*time.Second, "the warmup (≥ 2 ticks of 3 s) was not waited for")
	assert.Contains(t, out, `msg="stopping during start-up" signal=SIGTERM`)
	assert.Contains(t, out, "demond stopped during start-up")
	assert.NotContains(t, out, "start failed")
	assert.Contains(t, out, "device released; ledger at zero")
	for _, m := range drain(msgs, 0) {
		assert.NotContains(t, m, "READY=1")
	}
}

// A stop that hangs (a session's tick loop blocked at the run.tick fault point keeps the
// drain from finishing) is cut short by the stop timeout: demond exits non-zero and logs
// who still holds device memory.
func TestBinaryStopTimeoutLogsLedgerOwners(t *testing.T) {
	cmd, addr, msgs, logs := runDemond(t, []string{"DEMON_FAILPOINTS=run.tick=hang@5"},
		"--warmup=false", "--stop-timeout", "1500ms")
	await(t, msgs, "READY=1", 60*time.Second)
	c, ready := wsSession(t, addr)
	_ = c
	awaitHits(t, addr)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	code := waitExit(t, cmd, 20*time.Second, logs)
	out := logs.String()
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "stop did not finish within --stop-timeout 1.5s; device memory still held")
	assert.Contains(t, out, "owners.session:"+ready["session_id"].(string)+"=")
	assert.NotContains(t, out, "demond stopped")
}

// A second signal during a stop that hangs forces exit at once, after logging who still
// holds device memory.
func TestBinarySecondSignalForcesExit(t *testing.T) {
	cmd, addr, msgs, logs := runDemond(t, []string{"DEMON_FAILPOINTS=run.tick=hang@5"}, "--warmup=false")
	await(t, msgs, "READY=1", 60*time.Second)
	c, ready := wsSession(t, addr)
	_ = c
	awaitHits(t, addr)
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	await(t, msgs, "STOPPING=1", 5*time.Second)
	awaitLog(t, logs, "stopping", 5*time.Second)
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	code := waitExit(t, cmd, 5*time.Second, logs) // the stop timeout is 30 s
	out := logs.String()
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "demond: second SIGINT: exiting without a graceful stop")
	assert.Contains(t, out, "second SIGINT: exiting without a graceful stop; device memory still held")
	assert.Contains(t, out, "owners.session:"+ready["session_id"].(string)+"=")
}

// awaitHits waits until the tick loop reached the armed run.tick hit and hangs there.
func awaitHits(t *testing.T, addr string) {
	t.Helper()
	base := "http://" + addr + "/"
	eventually(t, func() bool { return metric(t, base, `demon_fault_point_hits_total{point="run.tick"}`) >= 5 }, "the tick loop to hang")
}
