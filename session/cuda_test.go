//go:build !asan

// Not in the -asan pass: LeakSanitizer scans every mapping at exit and faults on the
// fake driver's deliberately inaccessible "device" address range. These tests run in
// the ordinary and -race passes.

package session_test

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

// Whole sessions on the "cuda" device, run on the FAKE CUDA driver (trttest.FakeCUDA):
// every engine input and output and the stream's device copy live in memory the CPU
// cannot address (the fake's device pointers fault on host access), so the CPU reference
// engines and the stream must go through their pinned staging shadows. The same session
// code runs unchanged; the ledger, the staging totals and the driver's own numbers all
// return to their baselines.

// newCUDARig is newRig on a cuda device backed by the fake driver (24 GiB, like the host
// rigs, so the realistic footprints fit; untouched fake memory costs nothing).
func newCUDARig(t *testing.T, spec string) (*rig, uint64) {
	t.Helper()
	return newCUDARigWith(t, spec, trttest.FakeCUDAOptions{})
}

func newCUDARigWith(t *testing.T, spec string, o trttest.FakeCUDAOptions) (*rig, uint64) {
	t.Helper()
	o.TotalBytes = 24 << 30
	trttest.FakeCUDA(t, o)
	r := newRigOn(t, func(f *trt.Faults) *trt.Device { return trttest.CUDADevice(t, f) }, spec)
	return r, driverFree(t, r)
}

// requireCUDABaseline: the ledger at its baseline, no staging left, and the fake driver's
// free memory back where it was.
func requireCUDABaseline(t *testing.T, r *rig, driverFree uint64) {
	t.Helper()
	trttest.RequireBaseline(t, r.dev, r.base)
	st, err := r.dev.StagingTotals()
	require.NoError(t, err)
	assert.Zero(t, st.UsedBytes, "no host staging left")
	assert.Zero(t, st.LiveHandles, "no staging handles left")
	// Settled: with delayed frees (FreeLag) one reading may still show the last ones.
	assert.Equal(t, driverFree, trttest.SettledDriverFree(t, r.dev), "the driver's free memory is back")
}

func TestCUDACreateRunClose(t *testing.T) {
	// Stream-ordered allocation (memory pools) and plain cuMemAlloc.
	for _, noPools := range []bool{false, true} {
		t.Run("no_pools="+strconv.FormatBool(noPools), func(t *testing.T) {
			cudaCreateRunClose(t, trttest.FakeCUDAOptions{NoPools: noPools})
		})
	}
}

func cudaCreateRunClose(t *testing.T, o trttest.FakeCUDAOptions) {
	r, driverFree := newCUDARigWith(t, "", o)
	desc := r.dev.String()
	if o.NoPools {
		assert.Contains(t, desc, ", cuMemAlloc, ")
	} else {
		assert.Contains(t, desc, "stream-ordered allocation")
	}
	host := newRig(t, 24<<30, "") // before any session: its leak check counts from here
	s, err := r.mgr.Create(t.Context(), request("vocals"))
	require.NoError(t, err)
	require.NotNil(t, s.Stems)
	owner := "session:" + s.ID
	l := trttest.Snapshot(t, r.dev)
	assert.Positive(t, l.Owner(owner).UsedBytes, "the session's device memory is on the ledger")
	assert.Positive(t, l.Kind("stream").UsedBytes, "the stream reserves its device bytes")
	st, err := r.dev.StagingTotals()
	require.NoError(t, err)
	assert.Positive(t, st.UsedBytes, "and computes on pinned host shadows")
	free, _, err := r.dev.DriverMemory()
	require.NoError(t, err)
	assert.Equal(t, l.Totals.UsedBytes, driverFree+r.base.Totals.UsedBytes-free,
		"the driver holds exactly what the ledger admitted")

	// Same source, same prompts on the host device: the staged engines (VAE encode, stems,
	// text encoder) give bit-identical results. (Slices depend on the wall-clock playhead;
	// trt's TestCUDAStagedStreamMatchesHost compares them tick for tick.)
	hs, err := host.mgr.Create(t.Context(), request("vocals"))
	require.NoError(t, err)
	assert.Equal(t, hs.Initial, s.Initial, "the initial buffer matches the host device")
	assert.Equal(t, hs.Stems.Vocals, s.Stems.Vocals, "the stems match")
	assert.Equal(t, trttest.Snapshot(t, host.dev).Owner("session:"+hs.ID).UsedBytes, l.Owner(owner).UsedBytes,
		"the session holds the same device bytes on both devices")
	require.NoError(t, hs.Close())

	r.mgr.Register(s)
	slices := streamSlices(t, s, 2)
	for _, ev := range slices {
		assert.Equal(t, 2*9*1920, len(ev.Samples))
		assert.Zero(t, ev.StartSample%1920)
	}
	assert.True(t, s.Closed())
	requireCUDABaseline(t, r, driverFree)
	trttest.RequireBaseline(t, host.dev, host.base)
}

// The whole session fault matrix on the cuda device (cuda_matrix_test.go), on the fake
// driver with delayed frees: every point, on the path that reaches it, once; each failure
// leaves the ledger, the handles, the staging ledger and the driver exactly at baseline,
// and the next start on the same path streams.
func TestCUDAFaultMatrix(t *testing.T) {
	r, driverFree := newCUDARigWith(t, "", trttest.FakeCUDAOptions{FreeLag: 2})
	m := newMatrixRig(t, r)
	for _, c := range cudaFaultMatrix() {
		t.Run(c.spec, func(t *testing.T) {
			f := runMatrixCase(t, m, c, 1, 0, nil)
			assert.Zero(t, f.LedgerLeaked, "ledger bytes leaked")
			assert.Zero(t, f.DriverLeaked, "driver bytes leaked")
		})
	}
	requireCUDABaseline(t, r, driverFree)
}

// Failed starts leave no growth in the driver's memory (the GPU leak check's fit, on the
// fake driver whose frees land late).
func TestCUDAFailedStartsDoNotGrow(t *testing.T) {
	r, driverFree := newCUDARigWith(t, "", trttest.FakeCUDAOptions{FreeLag: 2})
	g := failedStartGrowth(t, newMatrixRig(t, r), 24, 4, 0)
	assert.Equal(t, 6, g.Len())
	assert.InDelta(t, 0, g.PerThousand(), 1, "bytes per 1000 failed starts")
	requireCUDABaseline(t, r, driverFree)
}

// The driver refuses what the ledger admits (memory held outside the ledger, e.g. by
// another process): the session start fails with ErrOutOfMemory naming
// CUDA_ERROR_OUT_OF_MEMORY, rolls back to the baseline, and the next start succeeds once
// the memory is back.
func TestCUDADriverRefusalDuringCreate(t *testing.T) {
	r, driverFree := newCUDARig(t, "")
	// Another process takes all but 32 MiB of what is free (the fake re-reads this at
	// every cuMemAlloc); the ledger, which cannot see it, still admits the session.
	t.Setenv("DEMON_FAKE_CUDA_RESERVED_BYTES", strconv.FormatUint(driverFree-32<<20, 10))
	_, err := r.mgr.Create(t.Context(), request("vocals"))
	require.ErrorIs(t, err, trt.ErrOutOfMemory)
	assert.Contains(t, err.Error(), "CUDA_ERROR_OUT_OF_MEMORY")
	t.Setenv("DEMON_FAKE_CUDA_RESERVED_BYTES", "0")
	requireCUDABaseline(t, r, driverFree)

	s, err := r.mgr.Create(t.Context(), request("vocals"))
	require.NoError(t, err)
	streamSlices(t, s, 2)
	requireCUDABaseline(t, r, driverFree)
}
