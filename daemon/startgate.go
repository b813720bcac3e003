package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/fx"
)

// startGate bounds demond's start-up: every OnStart hook runs with a context that ends at
// the start deadline (--start-timeout) or when a signal interrupts start-up, and once that
// context has ended no further hook starts.
//
// fx cannot give the hooks that context itself: it rolls a failed start back with the
// very context Start was given, and skips every OnStop once that context has ended, so a
// start deadline on it would unwind nothing. Main therefore starts fx with a context that
// outlives the start deadline by the stop timeout, and the gate, a decorator of
// fx.Lifecycle, hands the OnStart hooks its own shorter-lived context instead.
type startGate struct {
	timeout time.Duration
	ctx     context.Context // nil until open: hooks then run with fx's context
	cancel  context.CancelCauseFunc
	stop    context.CancelFunc
}

func newStartGate(timeout time.Duration) *startGate { return &startGate{timeout: timeout} }

// open starts the start-up clock; call it right before fx's Start.
func (g *startGate) open() {
	ctx, cancel := context.WithCancelCause(context.Background())
	g.ctx, g.stop = context.WithTimeoutCause(ctx, g.timeout,
		fmt.Errorf("start did not finish within --start-timeout %s", g.timeout))
	g.cancel = cancel
}

// interrupt ends the start-up context early with cause (a signal).
func (g *startGate) interrupt(cause error) { g.cancel(cause) }

// close releases the gate's timer.
func (g *startGate) close() {
	if g.ctx != nil {
		g.stop()
		g.cancel(nil)
	}
}

// lifecycle decorates fx.Lifecycle so that every module's OnStart runs through the gate.
func (g *startGate) lifecycle(lc fx.Lifecycle) fx.Lifecycle { return gatedLifecycle{lc, g} }

type gatedLifecycle struct {
	fx.Lifecycle
	gate *startGate
}

func (l gatedLifecycle) Append(h fx.Hook) {
	if start := h.OnStart; start != nil {
		h.OnStart = func(ctx context.Context) error { return l.gate.run(ctx, start) }
	}
	l.Lifecycle.Append(h)
}

// run runs one OnStart hook under the gate. An error returned after the gate closed is
// prefixed with the reason it closed (which names the option to change), since the
// hook itself can only say "context deadline exceeded".
func (g *startGate) run(ctx context.Context, start func(context.Context) error) error {
	if g.ctx == nil {
		return start(ctx)
	}
	if g.ctx.Err() != nil {
		return context.Cause(g.ctx)
	}
	err := start(g.ctx)
	if cause := context.Cause(g.ctx); err != nil && cause != nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w: %w", cause, err)
	}
	return err
}
