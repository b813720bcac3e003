//go:build gpu

package session_test

// The gpu tier for sessions (go test -tags gpu; scripts/gpu-check.sh): whole sessions and
// the create-window fault matrix against real GPU memory. Each injected failure is repeated
// $DEMON_GPU_CHECK_N times (default 5) after a warm-up session; then the ledger must be at
// its baseline exactly and the driver's free memory back within tolerance. Lines starting
// "GPUCHECK " feed scripts/gpu-check.sh's summary.

import (
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

const gpuTolerance = 64 << 20 // driver free memory may differ this much from baseline

func newGPURig(t *testing.T, spec string) (*rig, uint64) {
	t.Helper()
	r := newRigOn(t, func(f *trt.Faults) *trt.Device { return trttest.RequireGPU(t, f) }, spec)
	return r, driverFree(t, r)
}

func gpuCheckN() int {
	if n, err := strconv.Atoi(os.Getenv("DEMON_GPU_CHECK_N")); err == nil && n > 0 {
		return n
	}
	return 5
}

var nvmlOnce sync.Once
var nvmlOK bool

// nvmlUsed returns GPU 0's used memory according to NVML, or -1 without NVML.
func nvmlUsed() int64 {
	nvmlOnce.Do(func() { nvmlOK = nvml.Init() == nvml.SUCCESS })
	if !nvmlOK {
		return -1
	}
	d, ret := nvml.DeviceGetHandleByIndex(0)
	if ret != nvml.SUCCESS {
		return -1
	}
	m, ret := d.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return -1
	}
	return int64(m.Used)
}

func TestGPUSessionCreateRunClose(t *testing.T) {
	r, driverFree := newGPURig(t, "")
	t.Logf("device: %s", r.dev)
	s, err := r.mgr.Create(t.Context(), request("vocals"))
	require.NoError(t, err)
	r.mgr.Register(s)
	slices := streamSlices(t, s, 2)
	require.Len(t, slices, 2)
	trttest.RequireBaseline(t, r.dev, r.base)
	free, err := trt.WaitDriverMemory(t.Context(), r.dev, driverFree, gpuTolerance, 10*time.Second)
	require.NoError(t, err)
	t.Logf("GPUCHECK session driver_free_before=%d driver_free_after=%d", driverFree, free)
}

func TestGPUCreateFaultMatrix(t *testing.T) {
	n := gpuCheckN()
	for _, spec := range []string{
		"device.alloc=oom@1", "device.alloc=oom@3", "device.alloc=oom@5", "device.alloc=oom@8",
		"session.init.context=error", "create.source_prepare=error", "create.stems=error",
		"create.conditioning=error", "create.stream=error", "create.playback=error",
		"create.finalize=error",
	} {
		t.Run(spec, func(t *testing.T) {
			r, _ := newGPURig(t, "")
			// Warm-up: one clean session, so lazily created driver state is in the baseline.
			s, err := r.mgr.Create(t.Context(), request("vocals"))
			require.NoError(t, err)
			require.NoError(t, s.Close())
			base := trttest.SettledDriverFree(t, r.dev)
			nv0 := nvmlUsed()
			ledger0 := trttest.Snapshot(t, r.dev)
			start := time.Now()
			for range n {
				r.faults.Reset()
				require.NoError(t, r.faults.Arm(spec))
				_, err := r.mgr.Create(t.Context(), request("vocals"))
				require.Error(t, err)
			}
			el := time.Since(start)
			r.faults.Reset()
			ledger1 := trttest.Snapshot(t, r.dev)
			free, werr := trt.WaitDriverMemory(t.Context(), r.dev, base, gpuTolerance, 10*time.Second)
			nv1 := nvmlUsed()
			t.Logf("GPUCHECK fault point=%s n=%d ledger_leaked_bytes=%d driver_leaked_bytes=%d nvml_used_before=%d nvml_used_after=%d ms_per_start=%.1f",
				spec, n, int64(ledger1.Totals.UsedBytes)-int64(ledger0.Totals.UsedBytes), int64(base)-int64(free), nv0, nv1,
				float64(el.Milliseconds())/float64(n))
			trttest.RequireBaseline(t, r.dev, ledger0)
			require.NoError(t, werr)
			st, err := r.dev.StagingTotals()
			require.NoError(t, err)
			assert.Zero(t, st.UsedBytes)

			s, err = r.mgr.Create(t.Context(), request("vocals"))
			require.NoError(t, err, "the next session starts")
			streamSlices(t, s, 2)
		})
	}
}
