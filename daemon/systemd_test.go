package daemon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/demon-audio/demon/trt/trttest"
)

// fakeNotifySocket is a NOTIFY_SOCKET (a unixgram socket) that hands each datagram to a
// channel. It sets NOTIFY_SOCKET for the test.
func fakeNotifySocket(t *testing.T) <-chan string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sd") // short: unix socket paths are limited to 108 bytes
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	msgs := make(chan string, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { _ = conn.Close(); <-done })
	t.Setenv("NOTIFY_SOCKET", path)
	return msgs
}

// await returns the first message containing want, failing after timeout.
func await(t *testing.T, msgs <-chan string, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-msgs:
			if strings.Contains(m, want) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q from the service within %s", want, timeout)
			return ""
		}
	}
}

// drain returns the messages that arrive within d.
func drain(msgs <-chan string, d time.Duration) []string {
	var out []string
	deadline := time.After(d)
	for {
		select {
		case m := <-msgs:
			out = append(out, m)
		case <-deadline:
			return out
		}
	}
}

func TestSystemdNotifyLifecycle(t *testing.T) {
	trttest.NoLeaks(t)
	msgs := fakeNotifySocket(t)
	t.Setenv("WATCHDOG_USEC", "200000") // WatchdogSec=200ms: ping every 100ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	var live *Liveness
	var ready *Readiness
	app := fxtest.New(t, Modules(serviceConfig(t), slog.New(slog.DiscardHandler)), fx.Populate(&live, &ready))
	app.RequireStart()

	// Models load, warmup (off here) and admission all happen in OnStart, before READY=1.
	m := await(t, msgs, "READY=1", time.Second)
	assert.Contains(t, m, "STATUS=ready")
	await(t, msgs, "WATCHDOG=1", time.Second)

	ready.Condition(CondAdmissionOpen).Set(false)
	await(t, msgs, "STATUS=not ready: admission_open", time.Second)
	ready.Condition(CondAdmissionOpen).Set(true)
	await(t, msgs, "STATUS=ready", time.Second)

	// A tick loop that beats keeps the pings coming.
	hb := live.Register("tick:session-1", 300*time.Millisecond)
	stopBeating := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stopBeating:
				return
			case <-time.After(20 * time.Millisecond):
				hb.Beat()
			}
		}
	}()
	pings := 0
	for _, m := range drain(msgs, 500*time.Millisecond) {
		if m == "WATCHDOG=1" {
			pings++
		}
	}
	assert.GreaterOrEqual(t, pings, 3, "pings while the loop beats")

	// The loop hangs: the pings stop and STATUS says why.
	close(stopBeating)
	wg.Wait()
	m = await(t, msgs, "STATUS=watchdog:", 2*time.Second)
	assert.Contains(t, m, "tick:session-1 silent for")
	for _, m := range drain(msgs, 400*time.Millisecond) {
		assert.NotEqual(t, "WATCHDOG=1", m, "pinged although a loop is silent")
	}

	// It recovers.
	hb.Beat()
	await(t, msgs, "WATCHDOG=1", time.Second)
	hb.Close()

	app.RequireStop()
	m = await(t, msgs, "STOPPING=1", time.Second)
	assert.Contains(t, m, "STATUS=stopping")
}

// recordingSystemd returns a Systemd whose messages are recorded instead of sent.
func recordingSystemd(t *testing.T) (*Systemd, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var sent []string
	s := NewSystemd(SystemdParams{Log: slog.New(slog.DiscardHandler), Liveness: NewLiveness(), Readiness: NewReadiness()})
	s.notify = func(state string) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, state)
		return true, nil
	}
	s.watchdogInterval = func() (time.Duration, error) { return 0, nil }
	return s, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), sent...)
	}
}

func countPrefix(msgs []string, prefix string) int {
	n := 0
	for _, m := range msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

func TestSystemdReadyWaitsForHolds(t *testing.T) {
	s, sent := recordingSystemd(t)
	lc := fxtest.NewLifecycle(t)
	lc.Append(fx.StartStopHook(s.start, s.stop))

	release := s.HoldReady("warmup")
	started := make(chan struct{})
	go func() { lc.RequireStart(); close(started) }()
	time.Sleep(50 * time.Millisecond)
	assert.Zero(t, countPrefix(sent(), "READY=1"), "READY before the warmup finished")
	assert.Contains(t, sent(), "STATUS=waiting for warmup")
	release()
	release() // idempotent
	<-started
	assert.Equal(t, 1, countPrefix(sent(), "READY=1"))
	lc.RequireStop()
	assert.Equal(t, 1, countPrefix(sent(), "STOPPING=1"))
}

func TestSystemdReadyHoldTimesOut(t *testing.T) {
	s, sent := recordingSystemd(t)
	defer s.HoldReady("engines")()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	err := s.start(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "still waiting for engines")
	assert.Zero(t, countPrefix(sent(), "READY=1"))
}

func TestSystemdExtendingKeepsPushingTheTimeout(t *testing.T) {
	s, sent := recordingSystemd(t)
	done := s.Extending(t.Context(), "loading engines", 40*time.Millisecond)
	time.Sleep(110 * time.Millisecond)
	done()
	done()
	msgs := sent()
	assert.Equal(t, "STATUS=loading engines", msgs[0])
	n := countPrefix(msgs, "EXTEND_TIMEOUT_USEC=40000")
	assert.GreaterOrEqual(t, n, 3, msgs)
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, n, countPrefix(sent(), "EXTEND_TIMEOUT_USEC="), "extended after done")
}

func TestSystemdWithoutNotifySocketIsSilent(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	s := NewSystemd(SystemdParams{Log: slog.New(slog.DiscardHandler), Liveness: NewLiveness(), Readiness: NewReadiness()})
	sent, err := s.notify("READY=1")
	require.NoError(t, err)
	assert.False(t, sent)
	require.NoError(t, s.start(t.Context()))
	require.NoError(t, s.stop(t.Context()))
}

// The shipped example configuration loads and mentions every option with a TOML key.
func TestDeployExampleConfigCoversEveryOption(t *testing.T) {
	const example = "../deploy/demond.toml.example"
	text, err := os.ReadFile(example)
	require.NoError(t, err)
	c, err := LoadConfig([]string{"--config", example}, env(nil), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:1318", c.Listen)
	assert.Equal(t, "127.0.0.1:1319", c.ControlListen)
	for _, o := range options() {
		if o.toml != "" {
			assert.Regexp(t, `(?m)^#? ?`+o.toml+` = `, string(text), "option %s missing from %s", o.toml, example)
		}
	}
	unit, err := os.ReadFile("../deploy/demond.service")
	require.NoError(t, err)
	for _, line := range []string{"Type=notify", "NotifyAccess=main", "WatchdogSec=30", "TimeoutStartSec=300", "TimeoutStopSec=45", "RestartPreventExitStatus=2"} {
		assert.Regexp(t, `(?m)^`+line+`$`, string(unit))
	}
}
