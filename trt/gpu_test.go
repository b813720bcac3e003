//go:build gpu

package trt_test

// The gpu tier (go test -tags gpu; make test-gpu; scripts/gpu-check.sh): the cuda device
// against the real driver and GPU memory. Each test skips with the reason when there is
// no GPU (trttest.RequireGPU). Lines starting "GPUCHECK " are the figures
// scripts/gpu-check.sh collects into its summary.

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

func requireGPU(t *testing.T) *trt.Device { t.Helper(); return trttest.RequireGPU(t, nil) }

func TestGPULedgerAgreesWithDriver(t *testing.T) {
	trttest.NoLeaks(t)
	dev := requireGPU(t)
	t.Logf("device: %s", dev)
	tot, err := dev.Totals()
	require.NoError(t, err)
	free0, total, err := dev.DriverMemory()
	require.NoError(t, err)
	assert.Equal(t, total, tot.CapacityBytes, "ledger capacity = cuMemGetInfo total")

	const n = 256 << 20
	var bufs []*trt.Buffer
	for range 4 {
		b, err := dev.Alloc(n, "gpu:cross")
		require.NoError(t, err)
		bufs = append(bufs, b)
	}
	free1, _, err := dev.DriverMemory()
	require.NoError(t, err)
	used := free0 - free1
	assert.GreaterOrEqual(t, used, uint64(4*n), "the driver sees at least what the ledger admitted")
	assert.LessOrEqual(t, used, uint64(4*n+256<<20), "and not much more (allocation granularity)")
	t.Logf("GPUCHECK crosscheck ledger_bytes=%d driver_bytes=%d", 4*n, used)
	for _, b := range bufs {
		require.NoError(t, b.Close())
	}
	_, err = trt.WaitDriverMemory(t.Context(), dev, free0, 64<<20, 10*time.Second)
	require.NoError(t, err)
}

// Many alloc/free cycles after a warm-up: the driver's memory in use, sampled every 50
// cycles, shows no fitted growth (a GPU frees asynchronously, so one reading against one
// baseline proves nothing), and the free memory comes back to the post-warm-up baseline
// (a bounded poll).
func TestGPUAllocCyclesDoNotLeak(t *testing.T) {
	trttest.NoLeaks(t)
	dev := requireGPU(t)
	sizes := []uint64{4 << 10, 1 << 20, 3<<20 + 17, 64 << 20}
	cycle := func() {
		for _, s := range sizes {
			b, err := dev.Alloc(s, "gpu:cycles")
			require.NoError(t, err)
			require.NoError(t, b.Close())
		}
	}
	for range 20 {
		cycle()
	}
	base := trttest.SettledDriverFree(t, dev)
	const cycles, every = 1000, 50
	growth := trttest.NewDriverGrowth(dev)
	var el time.Duration
	for c := 1; c <= cycles; c++ {
		t0 := time.Now()
		cycle()
		el += time.Since(t0)
		if c%every == 0 {
			growth.Sample(t, c)
		}
	}
	free, err := trt.WaitDriverMemory(t.Context(), dev, base, 32<<20, 10*time.Second)
	require.NoError(t, err)
	leaked := int64(base) - int64(free)
	t.Logf("GPUCHECK alloc_cycles cycles=%d allocs=%d allocs_per_s=%.0f driver_free_before=%d driver_free_after=%d leaked_bytes=%d growth_per_1000=%.0f samples=%d",
		cycles, cycles*len(sizes), float64(cycles*len(sizes))/el.Seconds(), base, free, leaked, growth.PerThousand(), growth.Len())
	growth.RequireBelow(t, 16<<20)
	l := trttest.Snapshot(t, dev)
	assert.Zero(t, l.Totals.UsedBytes)
}

func TestGPUCopyThroughput(t *testing.T) {
	trttest.NoLeaks(t)
	dev := requireGPU(t)
	c, err := dev.TimeCopies(256<<20, 20, "gpu:copies")
	require.NoError(t, err)
	t.Logf("GPUCHECK copies bytes=%d iterations=%d h2d_gbps=%.2f d2h_gbps=%.2f", c.Bytes, c.Iterations, c.HostToDeviceGBps(), c.DeviceToHostGBps())
	assert.Greater(t, c.HostToDeviceGBps(), 1.0)
	assert.Greater(t, c.DeviceToHostGBps(), 1.0)
	st, err := dev.StagingTotals()
	require.NoError(t, err)
	assert.Zero(t, st.UsedBytes)
}

// The staged stream on a real GPU produces the host device's slices bit for bit.
func TestGPUStagedStreamMatchesHost(t *testing.T) {
	trttest.NoLeaks(t)
	gpu := requireGPU(t)
	host := trttest.HostDevice(t, 8<<30, nil)
	hs := stagedStream(t, host, 250)
	gs := stagedStream(t, gpu, 250)
	p := defaultTick()
	hslice := make([]float32, trt.MaxSliceFloats)
	gslice := make([]float32, trt.MaxSliceFloats)
	var tickNs int64
	ticks := 0
	for range 24 {
		p.PlayheadS += 0.04
		hr, err := hs.Tick(p, hslice)
		require.NoError(t, err)
		t0 := time.Now()
		gr, err := gs.Tick(p, gslice)
		tickNs += time.Since(t0).Nanoseconds()
		ticks++
		require.NoError(t, err)
		require.Equal(t, hr.Decoded, gr.Decoded)
		if hr.Decoded {
			require.Equal(t, hslice[:2*hr.NumSamples], gslice[:2*gr.NumSamples])
		}
	}
	t.Logf("GPUCHECK staged_stream ticks=%d mean_tick_ms=%.3f", ticks, float64(tickNs)/float64(ticks)/1e6)
}
