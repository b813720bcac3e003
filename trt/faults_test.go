package trt_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

// Hits that fire "hang" while another goroutine disarms and re-arms the point all return:
// a hit that read the arming before a change is released by that change (run with -race).
func TestHangingHitsReturnUnderConcurrentArming(t *testing.T) {
	trttest.NoLeaks(t)
	f := trttest.Faults(t, "")
	const rounds, hitters = 300, 4
	for round := range rounds {
		require.NoError(t, f.Arm("run.tick=hang"))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range hitters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_ = f.Hit("run.tick")
			}()
		}
		close(start)
		// Disarm while the hitters are between reading the arming and parking.
		require.NoError(t, f.Arm("run.tick=off"))
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: a hit armed to hang was not released by the disarm", round)
		}
	}
	require.Equal(t, int64(rounds*hitters), f.Hits("run.tick"))
}

// A Go-side hang nobody releases ends at the cap (10 minutes; shortened here), like the
// native registry's.
func TestHangIsCapped(t *testing.T) {
	trttest.NoLeaks(t)
	defer trt.SetMaxHang(50 * time.Millisecond)()
	f := trttest.Faults(t, "run.tick=hang")
	start := time.Now()
	require.NoError(t, f.Hit("run.tick"))
	elapsed := time.Since(start)
	require.GreaterOrEqual(t, elapsed, 50*time.Millisecond, "the hit hung until the cap")
	require.Less(t, elapsed, 10*time.Second)
}
