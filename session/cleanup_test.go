package session_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

// managerWith is a manager on r's device and model with its own log and hooks.
func managerWith(r *rig, log *slog.Logger, hooks session.Hooks) *session.Manager {
	return session.NewManager(r.mgr.Config(), r.dev, r.model, r.faults, log, hooks)
}

// linesWith returns the log lines that contain msg.
func linesWith(logs *bytes.Buffer, msg string) []string {
	var out []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, msg) {
			out = append(out, line)
		}
	}
	return out
}

// A release that fails while create rolls back is logged, with the original error as its
// cause; Create returns the original error, not the cleanup one, and the failing step
// still freed its resource.
func TestCreateRollbackCleanupFailureKeepsTheOriginalError(t *testing.T) {
	for _, tc := range []struct{ point, resource string }{
		{"close.stream", "resource=stream"},
		{"close.engine_session", `resource="engine session"`},
	} {
		t.Run(tc.point, func(t *testing.T) {
			r := newRig(t, 24<<30, "create.finalize=error,"+tc.point+"=error")
			// Create and the run loop below log on this goroutine: a plain buffer will do.
			var logs bytes.Buffer
			mgr := managerWith(r, slog.New(slog.NewTextHandler(&logs, nil)), session.Hooks{})
			handles := trt.LiveHandles()

			_, err := mgr.Create(t.Context(), request(""))
			require.ErrorIs(t, err, trt.ErrFaultInjected)
			assert.Equal(t, "create.finalize", session.ErrorWindow(err), "the original error")
			assert.NotContains(t, err.Error(), tc.point, "the cleanup error neither replaces nor joins it")
			assert.EqualValues(t, 1, r.faults.Hits("create.finalize"))
			assert.EqualValues(t, 1, r.faults.Hits(tc.point), "the release failed during the rollback")
			failed := linesWith(&logs, `msg="session cleanup step failed"`)
			require.Len(t, failed, 1, "the cleanup error is logged once")
			assert.Contains(t, failed[0], tc.resource)
			assert.Contains(t, failed[0], "fault injected at "+tc.point)
			assert.Contains(t, failed[0], "cause=", "with the original error as the cause")
			assert.Contains(t, failed[0], "fault injected at create.finalize")
			trttest.RequireBaseline(t, r.dev, r.base)
			assert.Equal(t, handles, trt.LiveHandles())
			assert.Zero(t, mgr.Open())

			r.faults.Reset()
			s, err := mgr.Create(t.Context(), request(""))
			require.NoError(t, err, "the next session starts")
			streamSlices(t, s, 2)
			trttest.RequireBaseline(t, r.dev, r.base)
		})
	}
}

// Close while a command runs on the loop stops accepting commands but frees no device
// state until the command has returned: the command still finds its stream usable.
func TestCloseWaitsForTheRunningCommand(t *testing.T) {
	r := newRig(t, 24<<30, "")
	s, err := r.mgr.Create(t.Context(), request(""))
	require.NoError(t, err)
	ran := make(chan error, 1)
	go func() { ran <- s.Run(context.Background(), &countingOutput{s: s, want: 1 << 30}) }()

	entered, proceed := make(chan struct{}), make(chan struct{})
	cmdDone := make(chan struct{})
	var cmdErr error
	go func() {
		_ = s.Do(context.Background(), func(rt *session.Runtime) error {
			close(entered)
			<-proceed
			// Close has been called by now: the stream must still be there.
			cmdErr = rt.SetPrompt("after close was called", "", "", "")
			close(cmdDone)
			return cmdErr
		})
	}()
	<-entered
	owner := "session:" + s.ID
	held := trttest.Snapshot(t, r.dev).Owner(owner)
	require.Positive(t, held.LiveHandles)

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a command was running", err)
	case <-time.After(200 * time.Millisecond):
	}
	assert.False(t, s.Closed())
	assert.Equal(t, held, trttest.Snapshot(t, r.dev).Owner(owner), "nothing freed while the command runs")
	require.ErrorIs(t, s.Do(context.Background(), func(*session.Runtime) error { return nil }), session.ErrClosed,
		"no new command is accepted once Close was called")

	close(proceed)
	require.NoError(t, <-closed)
	select {
	case <-cmdDone:
	default:
		t.Fatal("Close returned before the command finished")
	}
	require.NoError(t, cmdErr, "the command ran on a live stream after Close was called")
	require.NoError(t, <-ran)
	assert.True(t, s.Closed())
	trttest.RequireBaseline(t, r.dev, r.base)
}

// Creates are serialised: while one create is inside its transaction (held at a hanging
// fault point), a second Create reaches none of its steps; it runs once the first returned.
func TestCreatesAreSerialised(t *testing.T) {
	r := newRig(t, 24<<30, "create.conditioning=hang")
	var mu sync.Mutex
	var started []string
	mgr := managerWith(r, nil, session.Hooks{Started: func(id string, _ time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		started = append(started, id)
	}})
	type result struct {
		s   *session.Session
		err error
	}
	create := func(id string) <-chan result {
		out := make(chan result, 1)
		go func() {
			req := request("")
			req.ID = id
			s, err := mgr.Create(context.Background(), req)
			out <- result{s, err}
		}()
		return out
	}

	first := create("first")
	deadline := time.Now().Add(10 * time.Second)
	for r.faults.Hits("create.conditioning") < 1 {
		require.True(t, time.Now().Before(deadline), "the first create never reached create.conditioning")
		time.Sleep(time.Millisecond)
	}
	second := create("second")
	time.Sleep(200 * time.Millisecond)
	assert.EqualValues(t, 1, r.faults.Hits("create.source_prepare"), "the second create started while the first was inside create")
	allocs := trttest.Snapshot(t, r.dev).Totals.Allocations
	time.Sleep(50 * time.Millisecond)
	assert.Equal(t, allocs, trttest.Snapshot(t, r.dev).Totals.Allocations, "nothing allocates while the first create hangs")

	require.NoError(t, r.faults.Arm("create.conditioning=off")) // the first create goes on
	a, b := <-first, <-second
	require.NoError(t, a.err)
	require.NoError(t, b.err)
	assert.Equal(t, []string{"first", "second"}, started)
	assert.EqualValues(t, 2, r.faults.Hits("create.source_prepare"))
	require.NoError(t, a.s.Close())
	require.NoError(t, b.s.Close())
	trttest.RequireBaseline(t, r.dev, r.base)
}
