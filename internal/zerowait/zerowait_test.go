package zerowait_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/internal/zerowait"
)

type counter struct {
	mu   sync.Mutex
	n    int
	zero zerowait.Signal
}

func (c *counter) add(d int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n += d; c.n == 0 {
		c.zero.Fire()
	}
}

func (c *counter) state() (int, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.zero.C()
}

func TestWaitReturnsWhenTheCountReachesZero(t *testing.T) {
	c := &counter{}
	require.NoError(t, zerowait.Wait(t.Context(), c.state), "zero already")

	c.add(2)
	done := make(chan error, 1)
	go func() { done <- zerowait.Wait(t.Context(), c.state) }()
	c.add(-1)
	select {
	case err := <-done:
		t.Fatalf("returned at a count of 1: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	c.add(-1)
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return once the count reached zero")
	}

	// The signal re-arms: a second round works the same.
	c.add(1)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, zerowait.Wait(ctx, c.state), context.DeadlineExceeded)
	c.add(-1)
	assert.NoError(t, zerowait.Wait(t.Context(), c.state))
}
