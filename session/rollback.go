package session

import (
	"errors"
	"log/slog"
	"slices"
)

// rollback is a stack of releases registered immediately after each acquisition. If the
// transaction fails, Run releases everything in reverse order; cleanup errors are logged
// and never replace the original error. Commit hands ownership to the next owner (the
// session object) and disarms the stack.
type rollback struct {
	log   *slog.Logger
	steps []rollbackStep
	done  bool
}

type rollbackStep struct {
	name    string
	release func() error
}

// push registers the release of a resource just acquired.
func (r *rollback) push(name string, release func() error) {
	r.steps = append(r.steps, rollbackStep{name, release})
}

// commit disarms the stack: the resources now belong to someone else.
func (r *rollback) commit() { r.done = true }

// run releases everything still registered, in reverse order. Safe to defer always.
func (r *rollback) run(cause error) {
	if r.done {
		return
	}
	r.done = true
	for _, s := range slices.Backward(r.steps) {
		if err := s.release(); err != nil {
			r.log.Error("session cleanup step failed", "resource", s.name, "err", err, "cause", cause)
		}
	}
}

// closeStep puts the release of a session resource behind its close.* fault point, in
// create's rollback as in teardown: an injected failure is reported like a failed release,
// and the release still runs (a failing step must not leave its resource allocated).
func (m *Manager) closeStep(point string, release func() error) func() error {
	return func() error { return errors.Join(m.hit(point), release()) }
}

// joinCleanup logs a cleanup error without letting it replace the original.
func joinCleanup(log *slog.Logger, resource string, err error) {
	if err != nil && !errors.Is(err, errSilent) {
		log.Error("session cleanup step failed", "resource", resource, "err", err)
	}
}

var errSilent = errors.New("silent")
