package models_test

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

// rssBytes reads the resident set size from /proc/self/statm.
func rssBytes(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	require.NoError(t, err)
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	require.NoError(t, err)
	return pages * int64(os.Getpagesize())
}

// 1000 load/unload cycles of a whole model: no growth in the ledger, live handles, or RSS
// beyond noise. The RSS figures are logged (go test -v -run Cycles ./models/).
func TestLoadUnloadCyclesDoNotGrow(t *testing.T) {
	cycles := 1000
	if testing.Short() {
		cycles = 100
	}
	trttest.NoLeaks(t)
	repo := buildRepo(t, models.FootprintsRealistic)
	p := profile(t, repo)
	d := trttest.HostDevice(t, 24<<30, nil)
	base := trttest.Snapshot(t, d)
	handles := trt.LiveHandles()

	cycle := func() {
		m, err := models.LoadModel(d, repo, p, models.LoadOptions{})
		require.NoError(t, err)
		m.Release()
	}
	for range 50 { // warm-up: allocator arenas, page cache, thread stacks
		cycle()
	}
	runtime.GC()
	rss0 := rssBytes(t)
	for range cycles / 2 {
		cycle()
	}
	runtime.GC()
	rssHalf := rssBytes(t)
	for range cycles - cycles/2 {
		cycle()
	}
	runtime.GC()
	rss1 := rssBytes(t)
	trttest.RequireBaseline(t, d, base)
	assert.Equal(t, handles, trt.LiveHandles())
	tot := trttest.Snapshot(t, d).Totals
	assert.Equal(t, tot.Allocations, tot.Frees)
	growth, late := rss1-rss0, rss1-rssHalf
	t.Logf("%d load/unload cycles: RSS %.1f -> %.1f -> %.1f MiB (first half %+.2f MiB, second half %+.2f MiB); ledger allocations %d, frees %d",
		cycles, float64(rss0)/(1<<20), float64(rssHalf)/(1<<20), float64(rss1)/(1<<20),
		float64(rssHalf-rss0)/(1<<20), float64(late)/(1<<20), tot.Allocations, tot.Frees)
	// The allocator's arenas settle during the first half (thread pools come and go with each
	// decoder engine); a leak keeps growing linearly, so the second half must stay flat. A
	// cycle loads megabytes of weights and buffers: leaking any of them would add gigabytes
	// over 500 cycles, so even the race build's wider bound (64 KiB a cycle) stays sharp.
	lateLimit, growthLimit := int64(8<<20), int64(48<<20)
	if raceEnabled {
		lateLimit, growthLimit = 32<<20, 96<<20
	}
	assert.Less(t, late, lateLimit, "RSS kept growing in the second half: a leak, not allocator noise")
	assert.Less(t, growth, growthLimit, "RSS grew by far more than allocator noise")
}
