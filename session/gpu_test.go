//go:build gpu && !asan

package session_test

// The gpu tier for sessions (go test -tags gpu; scripts/gpu-check.sh): whole sessions, the
// session fault matrix (cuda_matrix_test.go: every fault point, $DEMON_GPU_CHECK_N failures
// each, default 5) and a growth fit over many failed starts, against real GPU memory. Lines
// starting "GPUCHECK " feed scripts/gpu-check.sh's summary.

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
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

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

var (
	nvmlOnce sync.Once
	nvmlErr  string
)

// nvmlProcess returns this process's memory on the GPU whose UUID is uuid, according to
// NVML, or -1 and why not: no NVML, no GPU with that UUID (the fake driver), or this PID is
// not in NVML's list (NVML reports host PIDs; inside a PID namespace it never is).
func nvmlProcess(uuid string) (int64, string) {
	nvmlOnce.Do(func() {
		if ret := nvml.Init(); ret != nvml.SUCCESS {
			nvmlErr = "no NVML: " + ret.Error()
		}
	})
	if nvmlErr != "" {
		return -1, nvmlErr
	}
	d, ret := nvml.DeviceGetHandleByUUID(uuid)
	if ret != nvml.SUCCESS {
		return -1, fmt.Sprintf("no NVML device with UUID %q: %s", uuid, ret.Error())
	}
	procs, ret := d.GetComputeRunningProcesses()
	if ret != nvml.SUCCESS {
		return -1, "compute processes: " + ret.Error()
	}
	pid := uint32(os.Getpid())
	var used int64 = -1
	for _, p := range procs {
		if p.Pid == pid && p.UsedGpuMemory != ^uint64(0) {
			used = max(used, 0) + int64(p.UsedGpuMemory)
		}
	}
	if used < 0 {
		return -1, fmt.Sprintf("PID %d is not among NVML's %d compute processes (a PID namespace?)", pid, len(procs))
	}
	return used, ""
}

// logAccounting prints the ledger against the driver and NVML for dev (a GPUCHECK line):
// driver_used is cuMemGetInfo total − free, the whole GPU; nvml_process is this PID's
// memory on the GPU matched by UUID. Their differences from the ledger are what the ledger
// does not see (the CUDA context; for the driver, other processes too).
func logAccounting(t *testing.T, dev *trt.Device, phase string) {
	t.Helper()
	tot, err := dev.Totals()
	require.NoError(t, err)
	// Settled: frees of temporaries the start just released may still be landing.
	free := trttest.SettledDriverFree(t, dev)
	_, total, err := dev.DriverMemory()
	require.NoError(t, err)
	ledger, driverUsed := int64(tot.UsedBytes), int64(total-free)
	proc, why := nvmlProcess(dev.GPUUUID())
	nvmlDiff := "n/a"
	if proc >= 0 {
		nvmlDiff = strconv.FormatInt(proc-ledger, 10)
	} else {
		t.Logf("NVML per-process memory unavailable: %s", why)
	}
	t.Logf("GPUCHECK accounting phase=%s uuid=%s ledger_bytes=%d driver_used_bytes=%d driver_minus_ledger=%d nvml_process_bytes=%d nvml_minus_ledger=%s",
		phase, dev.GPUUUID(), ledger, driverUsed, driverUsed-ledger, proc, nvmlDiff)
}

func TestGPUSessionCreateRunClose(t *testing.T) {
	r, driverFree := newGPURig(t, "")
	t.Logf("device: %s", r.dev)
	logAccounting(t, r.dev, "model_loaded")
	s, err := r.mgr.Create(t.Context(), request("vocals"))
	require.NoError(t, err)
	logAccounting(t, r.dev, "session_live")
	r.mgr.Register(s)
	slices := streamSlices(t, s, 2)
	require.Len(t, slices, 2)
	trttest.RequireBaseline(t, r.dev, r.base)
	free, err := trt.WaitDriverMemory(t.Context(), r.dev, driverFree, gpuTolerance, 10*time.Second)
	require.NoError(t, err)
	logAccounting(t, r.dev, "session_closed")
	t.Logf("GPUCHECK session driver_free_before=%d driver_free_after=%d", driverFree, free)
}

// Every session fault point against real GPU memory, with the bytes each one left behind.
func TestGPUFaultMatrix(t *testing.T) {
	r, _ := newGPURig(t, "")
	m := newMatrixRig(t, r)
	n := envInt("DEMON_GPU_CHECK_N", 5)
	proc := func() int64 { v, _ := nvmlProcess(r.dev.GPUUUID()); return v }
	for _, c := range cudaFaultMatrix() {
		t.Run(c.spec, func(t *testing.T) {
			f := runMatrixCase(t, m, c, n, gpuTolerance, proc)
			t.Logf("GPUCHECK fault point=%s path=%s n=%d ledger_leaked_bytes=%d driver_leaked_bytes=%d max_wait_ms=%.1f nvml_process_before=%d nvml_process_after=%d ms_per_start=%.1f",
				f.Spec, f.Path, f.N, f.LedgerLeaked, f.DriverLeaked, f.MaxWaitMs, f.ProcBefore, f.ProcAfter, f.MsPerStart)
		})
	}
}

// Many failed starts after a warm-up: the driver's memory in use, sampled every 10, shows
// no fitted growth (at most 64 MiB per 1000 failed starts, 64 KiB each).
func TestGPUFailedStartsDoNotGrow(t *testing.T) {
	r, _ := newGPURig(t, "")
	cycles := envInt("DEMON_GPU_CHECK_CYCLES", 200)
	t0 := time.Now()
	g := failedStartGrowth(t, newMatrixRig(t, r), cycles, 10, gpuTolerance)
	t.Logf("GPUCHECK growth failed_starts=%d samples=%d growth_per_1000=%.0f s=%.1f", cycles, g.Len(), g.PerThousand(), time.Since(t0).Seconds())
	g.RequireBelow(t, 64<<20)
	trttest.RequireBaseline(t, r.dev, r.base)
}
