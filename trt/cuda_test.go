//go:build !asan

// Not in the -asan pass: LeakSanitizer scans every mapping at exit and faults on the
// fake driver's deliberately inaccessible "device" address range. These tests run in
// the ordinary and -race passes.

package trt_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

// The cuda device on the FAKE CUDA driver (trttest.FakeCUDA): the loader, the ledger
// against the driver's numbers, both out-of-memory paths and the async-free poll, in CI
// without a GPU. The real-GPU versions are in gpu_test.go (-tags gpu).

func TestCUDANoDriverIsAClearError(t *testing.T) {
	trttest.NoLeaks(t)
	t.Setenv(trt.CUDALibraryEnv, "/nonexistent/libcuda.so.1")
	_, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceCUDA})
	require.ErrorIs(t, err, trt.ErrCUDA)
	assert.Contains(t, err.Error(), "no CUDA driver (/nonexistent/libcuda.so.1 not found: ")
}

func TestCUDAFakeLedgerMatchesDriver(t *testing.T) {
	trttest.NoLeaks(t)
	trttest.FakeCUDA(t, trttest.FakeCUDAOptions{TotalBytes: 2 << 30})
	dev := trttest.CUDADevice(t, nil)
	assert.Contains(t, dev.String(), "cuda:0 FAKE CUDA device")
	tot, err := dev.Totals()
	require.NoError(t, err)
	assert.Equal(t, uint64(2<<30), tot.CapacityBytes, "ledger capacity = the driver's total")

	var bufs []*trt.Buffer
	var sum uint64
	for _, n := range []uint64{1 << 20, 3 << 20, 4097} {
		b, err := dev.Alloc(n, "test:cross")
		require.NoError(t, err)
		bufs = append(bufs, b)
		sum += n
	}
	free, total, err := dev.DriverMemory()
	require.NoError(t, err)
	assert.Equal(t, uint64(2<<30), total)
	assert.Equal(t, sum, total-free, "the driver sees what the ledger admitted")
	l := trttest.Snapshot(t, dev)
	assert.Equal(t, sum, l.Totals.UsedBytes)
	for _, b := range bufs {
		require.NoError(t, b.Close())
	}
	free, _, err = dev.DriverMemory()
	require.NoError(t, err)
	assert.Equal(t, total, free)
}

func TestCUDAFakeOutOfMemory(t *testing.T) {
	trttest.NoLeaks(t)
	// The ledger refuses first, naming the bytes; the driver is never asked.
	trttest.FakeCUDA(t, trttest.FakeCUDAOptions{TotalBytes: 64 << 20, ReservedBytes: 60 << 20})
	dev := trttest.CUDADevice(t, nil)
	_, err := dev.Alloc(65<<20, "test:big")
	require.ErrorIs(t, err, trt.ErrOutOfMemory)
	assert.Contains(t, err.Error(), "requested 68157440 bytes (65.00 MiB) for test:big, 67108864 bytes (64.00 MiB) free")

	// The ledger admits 8 MiB of its 64, the driver (60 MiB held by others) refuses:
	// CUDA_ERROR_OUT_OF_MEMORY, mapped to ErrOutOfMemory, and nothing stays on the ledger.
	_, err = dev.Alloc(8<<20, "test:refused")
	require.ErrorIs(t, err, trt.ErrOutOfMemory)
	require.NotErrorIs(t, err, trt.ErrCUDA)
	assert.Contains(t, err.Error(), "CUDA_ERROR_OUT_OF_MEMORY")
	tot, err := dev.Totals()
	require.NoError(t, err)
	assert.Zero(t, tot.UsedBytes)
	assert.Equal(t, uint64(2), tot.Failed)
	assert.Zero(t, tot.PeakBytes, "a refused allocation never raised the peak")
	assert.Zero(t, tot.Allocations, "nor counted as an allocation")
	assert.Zero(t, tot.Frees, "nor as a free")
}

func TestCUDAFakeFaultPoints(t *testing.T) {
	trttest.NoLeaks(t)
	trttest.FakeCUDA(t, trttest.FakeCUDAOptions{})
	f := trttest.Faults(t, "device.create=error")
	_, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceCUDA, Faults: f})
	require.ErrorIs(t, err, trt.ErrFaultInjected)
	require.NoError(t, f.Arm("device.create=off,device.alloc=oom"))
	dev := trttest.CUDADevice(t, f)
	_, err = dev.Alloc(1024, "test:fault")
	require.ErrorIs(t, err, trt.ErrOutOfMemory)
	free, total, err := dev.DriverMemory()
	require.NoError(t, err)
	assert.Equal(t, total, free, "an injected failure never reaches the driver")
}

func TestWaitDriverMemoryPollsAnAsyncFree(t *testing.T) {
	trttest.NoLeaks(t)
	trttest.FakeCUDA(t, trttest.FakeCUDAOptions{FreeLag: 5})
	dev := trttest.CUDADevice(t, nil)
	base, _, err := dev.DriverMemory()
	require.NoError(t, err)
	b, err := dev.Alloc(16<<20, "test:lag")
	require.NoError(t, err)
	require.NoError(t, b.Close())
	free, _, err := dev.DriverMemory()
	require.NoError(t, err)
	assert.Less(t, free, base, "the fake frees asynchronously, like a GPU")
	free, err = trt.WaitDriverMemory(t.Context(), dev, base, 0, 5*time.Second)
	require.NoError(t, err)
	assert.Equal(t, base, free)

	// A real leak: the wait times out with the shortfall named.
	held, err := dev.Alloc(16<<20, "test:held")
	require.NoError(t, err)
	defer held.Close()
	_, err = trt.WaitDriverMemory(t.Context(), dev, base, 1<<20, 100*time.Millisecond)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "16777216 bytes below the baseline")
	_, err = trt.WaitDriverMemory(t.Context(), dev, base, 16<<20, 100*time.Millisecond)
	require.NoError(t, err, "within tolerance")
}

func TestDriverMemoryAndCopiesOnBothKinds(t *testing.T) {
	trttest.NoLeaks(t)
	host := trttest.HostDevice(t, 1<<30, nil)
	b, err := host.Alloc(1000, "test:host")
	require.NoError(t, err)
	free, total, err := host.DriverMemory()
	require.NoError(t, err)
	assert.Equal(t, uint64(1<<30), total)
	assert.Equal(t, uint64(1<<30-1000), free, "host: capacity − used")
	require.NoError(t, b.Close())

	trttest.FakeCUDA(t, trttest.FakeCUDAOptions{})
	gpu := trttest.CUDADevice(t, nil)
	for _, dev := range []*trt.Device{host, gpu} {
		c, err := dev.TimeCopies(4<<20, 3, "test:copies")
		require.NoError(t, err, dev.String())
		assert.Equal(t, 3, c.Iterations)
		assert.GreaterOrEqual(t, c.HostToDeviceGBps(), 0.0)
		st, err := dev.StagingTotals()
		require.NoError(t, err)
		assert.Zero(t, st.UsedBytes, "staging freed")
		assert.Zero(t, st.LiveHandles)
		l := trttest.Snapshot(t, dev)
		assert.Zero(t, l.Totals.UsedBytes)
		assert.Zero(t, l.Totals.LiveHandles)
	}
	st, err := gpu.StagingTotals()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), st.Allocations, "one pinned staging buffer for the copies")
	_, err = gpu.TimeCopies(0, 1, "test:copies")
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
}

func TestCUDAFakeClosedDevice(t *testing.T) {
	trttest.NoLeaks(t)
	trttest.FakeCUDA(t, trttest.FakeCUDAOptions{})
	dev, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceCUDA})
	require.NoError(t, err)
	require.NoError(t, dev.Close())
	_, _, err = dev.DriverMemory()
	require.ErrorIs(t, err, trt.ErrState)
	_, err = trt.WaitDriverMemory(context.Background(), dev, 0, 0, time.Second)
	require.ErrorIs(t, err, trt.ErrState)
	_, err = dev.StagingTotals()
	require.ErrorIs(t, err, trt.ErrState)
}

// The GPU leak check's fit (trttest.DriverGrowth) on the fake driver, whose frees show
// in cuMemGetInfo only a few queries later: alloc/free cycles fit no growth; the same
// cycles keeping 1 MiB every 10 cycles fit 100 MiB per 1000 cycles, which the check
// refuses. Memory held outside the ledger (the fake's reserved bytes) changes nothing.
func TestCUDADriverGrowthFit(t *testing.T) {
	trttest.NoLeaks(t)
	trttest.FakeCUDA(t, trttest.FakeCUDAOptions{TotalBytes: 4 << 30, ReservedBytes: 200 << 20, FreeLag: 2})
	dev := trttest.CUDADevice(t, nil)
	var kept []*trt.Buffer
	defer func() {
		for _, b := range kept {
			require.NoError(t, b.Close())
		}
	}()
	run := func(leakEvery int) *trttest.DriverGrowth {
		g := trttest.NewDriverGrowth(dev)
		for c := 1; c <= 100; c++ {
			for _, n := range []uint64{4 << 10, 2 << 20} {
				b, err := dev.Alloc(n, "test:growth")
				require.NoError(t, err)
				require.NoError(t, b.Close())
			}
			if leakEvery > 0 && c%leakEvery == 0 {
				b, err := dev.Alloc(1<<20, "test:growth-leak")
				require.NoError(t, err)
				kept = append(kept, b)
			}
			if c%10 == 0 {
				g.Sample(t, c)
			}
		}
		return g
	}
	clean := run(0)
	assert.Equal(t, 10, clean.Len())
	assert.InDelta(t, 0, clean.PerThousand(), 1, "no growth: %.0f bytes / 1000 cycles", clean.PerThousand())
	clean.RequireBelow(t, 1<<20)

	leaky := run(10)
	assert.InDelta(t, 100<<20, leaky.PerThousand(), 1, "1 MiB per 10 cycles")
	rec := &fatalRecorder{TB: t}
	leaky.RequireBelow(rec, 1<<20)
	assert.Contains(t, rec.msg, "driver memory grows 104857600 bytes per 1000 cycles over 10 samples")
}

// fatalRecorder records Fatalf instead of ending the test (the code under test returns
// right after calling it).
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) { r.msg = fmt.Sprintf(format, args...) }
