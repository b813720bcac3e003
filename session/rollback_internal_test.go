package session

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
)

// A preparation step's transient releases run in reverse order of acquisition, every one
// of them even when one fails, and the failure goes to the logger the step was given (the
// session's), not to a discard logger.
func TestTransientLogsFailedReleasesToItsLogger(t *testing.T) {
	var logs bytes.Buffer
	tr := newTransient(nil, "session:test", slog.New(slog.NewTextHandler(&logs, nil)))
	var order []string
	release := func(name string, err error) func() error {
		return func() error {
			order = append(order, name)
			return err
		}
	}
	tr.rb.push("context", release("context", nil))
	tr.rb.push("buffer", release("buffer", errors.New("free failed")))
	tr.rb.push("tokens", release("tokens", nil))
	tr.release()
	assert.Equal(t, []string{"tokens", "buffer", "context"}, order)
	assert.Contains(t, logs.String(), `msg="session cleanup step failed" resource=buffer err="free failed"`)
	tr.release()
	assert.Len(t, order, 3, "a second release frees nothing twice")
}

// A committed rollback releases nothing: the resources belong to the session now.
func TestCommittedRollbackReleasesNothing(t *testing.T) {
	rb := &rollback{log: discard}
	released := false
	rb.push("stream", func() error { released = true; return nil })
	rb.commit()
	rb.run(errors.New("late failure"))
	assert.False(t, released)
}

// A stage error names its stage once, also around a fault point's error, which already
// starts with the point.
func TestStageErrorNamesTheStageOnce(t *testing.T) {
	f, err := trt.NewFaults("handshake.ready=error")
	require.NoError(t, err)
	defer f.Close()
	stage := &StageError{Stage: "handshake.ready", Err: f.Hit("handshake.ready")}
	assert.Equal(t, "handshake.ready: fault injected at handshake.ready (hit 1)", stage.Error())
	assert.Equal(t, "create.stream: out of memory", (&StageError{Stage: "create.stream", Err: errors.New("out of memory")}).Error())
}
