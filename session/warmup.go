package session

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// WarmupResult is what /api/server-info and readiness report about boot warmup.
type WarmupResult struct {
	Done    bool    `json:"done"`
	Error   *string `json:"error"`
	Seconds float64 `json:"seconds"`
	Slices  int     `json:"-"`
}

// Warmup drives one synthetic session through the whole path (create, handshake-free run,
// close) so the first real session is warm and a broken model fails loudly at boot.
// Setup failures (create, runner construction) fail the warmup and are returned; runtime
// failures after the session streamed are logged and the warmup still counts as done
// (spec/lifecycle.md §4). Either way nothing stays allocated.
func (m *Manager) Warmup(ctx context.Context, req CreateRequest, slices int, budget time.Duration) (WarmupResult, error) {
	start := time.Now()
	res := WarmupResult{}
	fail := func(err error) (WarmupResult, error) {
		msg := err.Error()
		res.Error, res.Seconds = &msg, time.Since(start).Seconds()
		m.log.Error("warmup failed", "err", err, "seconds", res.Seconds)
		return res, err
	}
	if req.ID == "" {
		req.ID = "warmup-" + NewID()
	}
	s, err := m.Create(ctx, req)
	if err != nil {
		return fail(fmt.Errorf("warmup create: %w", err))
	}
	rctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	out := &countOutput{s: s, want: slices}
	err = s.Run(rctx, out)
	res.Slices = out.n
	var ri *RunnerInitError
	switch {
	case errors.As(err, &ri):
		return fail(fmt.Errorf("warmup: %w", err))
	case err != nil:
		m.log.Warn("warmup session failed while running (warmup still counts as done)", "err", err)
	case out.n < slices:
		return fail(fmt.Errorf("warmup produced %d of %d slices within %s", out.n, slices, budget))
	}
	res.Done, res.Seconds = true, time.Since(start).Seconds()
	m.log.Info("warmup passed", "seconds", res.Seconds, "slices", out.n)
	return res, nil
}

type countOutput struct {
	s    *Session
	want int
	n    int
}

func (c *countOutput) Slice(*SliceEvent) error {
	c.n++
	if c.n >= c.want {
		c.s.Stop()
	}
	return nil
}
