// Package zerowait waits for a count, kept under its owner's lock, to reach zero: open
// sessions at shutdown, live connections at drain, sessions still closing before a retry.
package zerowait

import "context"

// Signal wakes the waiters of "the count reached zero". It has no lock of its own: call
// Fire and C under the lock that guards the count. The zero value is ready to use.
type Signal struct{ ch chan struct{} }

// Fire wakes every current waiter; call it when the count drops to zero.
func (s *Signal) Fire() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// C returns the channel the next Fire closes; read it together with the count.
func (s *Signal) C() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Wait returns nil once state reports a count of zero, or ctx's error first. state reads
// the count and Signal.C under the owner's lock, in one critical section.
func Wait(ctx context.Context, state func() (int, <-chan struct{})) error {
	for {
		n, ch := state()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
