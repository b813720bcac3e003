package session_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

// logSink collects a manager's log lines (the run loop logs from its own goroutine).
type logSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the logged lines that contain msg.
func (l *logSink) lines(msg string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, msg) {
			out = append(out, line)
		}
	}
	return out
}

// managerWith is a manager on r's device and model with its own log and hooks.
func managerWith(r *rig, log *logSink, hooks session.Hooks) *session.Manager {
	return session.NewManager(r.mgr.Config(), r.dev, r.model, r.faults, slog.New(slog.NewTextHandler(log, nil)), hooks)
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
			logs := &logSink{}
			mgr := managerWith(r, logs, session.Hooks{})
			handles := trt.LiveHandles()

			_, err := mgr.Create(t.Context(), request(""))
			require.ErrorIs(t, err, trt.ErrFaultInjected)
			assert.Equal(t, "create.finalize", session.ErrorWindow(err), "the original error")
			assert.NotContains(t, err.Error(), tc.point, "the cleanup error neither replaces nor joins it")
			assert.EqualValues(t, 1, r.faults.Hits("create.finalize"))
			assert.EqualValues(t, 1, r.faults.Hits(tc.point), "the release failed during the rollback")
			failed := logs.lines(`msg="session cleanup step failed"`)
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
