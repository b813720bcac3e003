//go:build !asan

// Not in the -asan pass: LeakSanitizer scans every mapping at exit and faults on the
// fake driver's deliberately inaccessible "device" address range. These tests run in
// the ordinary and -race passes.

package session_test

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/session"
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

// newCUDARigWith is newCUDARig with the fake driver configured by o (24 GiB unless
// o.TotalBytes says otherwise).
func newCUDARigWith(t *testing.T, spec string, o trttest.FakeCUDAOptions) (*rig, uint64) {
	t.Helper()
	if o.TotalBytes == 0 {
		o.TotalBytes = 24 << 30
	}
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

// The driver refuses an allocation the ledger admitted (memory taken outside the ledger,
// e.g. by another process, after admission asked the driver): the session start fails
// with ErrOutOfMemory naming CUDA_ERROR_OUT_OF_MEMORY, rolls back to the baseline, and the
// next start succeeds once the memory is back. Admission is off here: with it on, the
// driver's figure refuses the start before any allocation
// (TestCUDAAdmissionRefusesWhatTheDriverCannotFit), and the fake cannot take the memory
// between admission and the first allocation.
func TestCUDADriverRefusalDuringCreate(t *testing.T) {
	r, driverFree := newCUDARig(t, "")
	mgr, _, _ := admissionManager(r, func(c *session.Config) { c.NoAdmission = true })
	// Another process takes all but 32 MiB of what is free (the fake re-reads this at
	// every cuMemAlloc); the ledger, which cannot see it, has room for the session.
	t.Setenv("DEMON_FAKE_CUDA_RESERVED_BYTES", strconv.FormatUint(driverFree-32<<20, 10))
	_, err := mgr.Create(t.Context(), request("vocals"))
	require.ErrorIs(t, err, trt.ErrOutOfMemory)
	assert.Contains(t, err.Error(), "CUDA_ERROR_OUT_OF_MEMORY")
	t.Setenv("DEMON_FAKE_CUDA_RESERVED_BYTES", "0")
	requireCUDABaseline(t, r, driverFree)

	s, err := r.mgr.Create(t.Context(), request("vocals"))
	require.NoError(t, err)
	streamSlices(t, s, 2)
	requireCUDABaseline(t, r, driverFree)
}

// admissionManager is a manager on r's device and model with r's configuration changed by
// tune, counting admission refusals and failed starts, and logging to the returned buffer
// (Create and Close log on the calling goroutine: a plain buffer will do).
func admissionManager(r *rig, tune func(*session.Config)) (*session.Manager, *admissionCounts, *bytes.Buffer) {
	cfg := r.mgr.Config()
	tune(&cfg)
	var logs bytes.Buffer
	n := &admissionCounts{}
	hooks := session.Hooks{Refused: func() { n.refused++ }, Failed: func(error) { n.failed++ }}
	return session.NewManager(cfg, r.dev, r.model, r.faults, slog.New(slog.NewTextHandler(&logs, nil)), hooks), n, &logs
}

type admissionCounts struct{ refused, failed int }

const driverWaitLogged = `msg="admission waited for the driver's memory"`

// Memory the ledger cannot see (another process) leaves the driver less free memory than
// the ledger: admission asks the driver too, waits for it up to DriverWait, and then
// refuses like a full ledger (ErrAdmission, the Refused hook), before allocating anything.
// The next start succeeds once the memory is back.
func TestCUDAAdmissionRefusesWhatTheDriverCannotFit(t *testing.T) {
	r, driverFree := newCUDARig(t, "")
	const wait = 200 * time.Millisecond
	mgr, n, _ := admissionManager(r, func(c *session.Config) { c.DriverWait = wait })
	handles := trt.LiveHandles()
	t.Setenv("DEMON_FAKE_CUDA_RESERVED_BYTES", strconv.FormatUint(driverFree-32<<20, 10))
	tot, err := r.dev.Totals()
	require.NoError(t, err)
	require.Greater(t, tot.FreeBytes(), uint64(16<<30), "the ledger has room for many sessions")

	start := time.Now()
	_, err = mgr.Create(t.Context(), request("vocals"))
	require.ErrorIs(t, err, session.ErrAdmission)
	assert.GreaterOrEqual(t, time.Since(start), wait, "admission waited for the driver before refusing")
	assert.Contains(t, err.Error(), "the driver reports 32.00 MiB")
	assert.Contains(t, err.Error(), "frees may still be in flight")
	assert.Equal(t, admissionCounts{refused: 1}, *n, "a refusal, not a failed start")
	trttest.RequireBaseline(t, r.dev, r.base)
	assert.Equal(t, handles, trt.LiveHandles(), "nothing was allocated")
	assert.Zero(t, mgr.Open())

	t.Setenv("DEMON_FAKE_CUDA_RESERVED_BYTES", "0")
	s, err := mgr.Create(t.Context(), request("vocals"))
	require.NoError(t, err, "admitted once the driver has the memory")
	require.NoError(t, s.Close())
	assert.Equal(t, admissionCounts{refused: 1}, *n)
	requireCUDABaseline(t, r, driverFree)
}

// A caller that gives up while admission waits for the driver gets its context's error at
// once: neither a refusal nor a failed start.
func TestCUDAAdmissionWaitEndsWithTheContext(t *testing.T) {
	r, driverFree := newCUDARig(t, "")
	mgr, n, _ := admissionManager(r, func(c *session.Config) { c.DriverWait = time.Minute })
	t.Setenv("DEMON_FAKE_CUDA_RESERVED_BYTES", strconv.FormatUint(driverFree-32<<20, 10))
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := mgr.Create(ctx, request(""))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, session.ErrAdmission)
	assert.Less(t, time.Since(start), 30*time.Second, "the wait ended with the context, not DriverWait")
	assert.Equal(t, admissionCounts{}, *n)
	t.Setenv("DEMON_FAKE_CUDA_RESERVED_BYTES", "0")
	requireCUDABaseline(t, r, driverFree)
}

// A session closes and the next starts at once, on a GPU with room for one: the driver
// frees asynchronously (the fake shows freed memory only after FreeLag further queries),
// so right after the close it still counts the closed session's memory. Admission waits
// for the frees to land and admits the start; without the wait it is refused, and without
// admission the start runs into the driver's out-of-memory error.
func TestCUDAAdmissionWaitsForTheLastSessionsFrees(t *testing.T) {
	const lag = 4
	// What one create + close puts through the driver, measured on a roomy fake: with late
	// frees everything the session freed still counts right after its close, so this is
	// what the driver must hold for one session (≥ its ledger peak).
	roomy, _ := newCUDARigWith(t, "", trttest.FakeCUDAOptions{FreeLag: lag})
	settled := trttest.SettledDriverFree(t, roomy.dev)
	_, total, err := roomy.dev.DriverMemory()
	require.NoError(t, err)
	s, err := roomy.mgr.Create(t.Context(), request(""))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	afterClose, _, err := roomy.dev.DriverMemory()
	require.NoError(t, err)
	oneSession := settled - afterClose
	modelBytes := total - settled
	headroom := roomy.mgr.Config().Headroom
	t.Logf("model %.2f GiB, one session through the driver %.2f GiB", float64(modelBytes)/(1<<30), float64(oneSession)/(1<<30))

	r, _ := newCUDARigWith(t, "", trttest.FakeCUDAOptions{FreeLag: lag, TotalBytes: modelBytes + oneSession + headroom + 64<<20})
	driverFree := trttest.SettledDriverFree(t, r.dev)
	cost := session.PredictCostForTest(r.mgr, len(source())/2/models.Hop, false)
	require.Greater(t, cost, uint64(64<<20), "unlanded frees leave too little for a second session")

	// closeThenStart creates and closes a session, then starts the next at once.
	closeThenStart := func(t *testing.T, tune func(*session.Config)) (*session.Manager, *admissionCounts, *bytes.Buffer, error) {
		require.Equal(t, driverFree, trttest.SettledDriverFree(t, r.dev), "the driver starts settled")
		mgr, n, logs := admissionManager(r, tune)
		first, err := mgr.Create(t.Context(), request(""))
		require.NoError(t, err, "one session fits")
		require.NoError(t, first.Close())
		next, err := mgr.Create(t.Context(), request(""))
		if err == nil {
			require.NoError(t, next.Close())
		}
		return mgr, n, logs, err
	}

	t.Run("admission_waits", func(t *testing.T) {
		_, n, logs, err := closeThenStart(t, func(*session.Config) {})
		require.NoError(t, err, "admitted once the frees landed")
		waited := linesWith(logs, driverWaitLogged)
		require.Len(t, waited, 1, "the next start, and only it, waited for the driver")
		assert.Equal(t, admissionCounts{}, *n)
		requireCUDABaseline(t, r, driverFree)
	})
	t.Run("no_wait_refuses", func(t *testing.T) {
		_, n, logs, err := closeThenStart(t, func(c *session.Config) { c.DriverWait = 0 })
		require.ErrorIs(t, err, session.ErrAdmission)
		assert.Contains(t, err.Error(), "frees may still be in flight")
		assert.Equal(t, admissionCounts{refused: 1}, *n)
		assert.Empty(t, linesWith(logs, driverWaitLogged))
		requireCUDABaseline(t, r, driverFree)
	})
	t.Run("no_admission_runs_out_of_memory", func(t *testing.T) {
		_, n, _, err := closeThenStart(t, func(c *session.Config) { c.NoAdmission = true })
		require.ErrorIs(t, err, trt.ErrOutOfMemory)
		assert.Contains(t, err.Error(), "CUDA_ERROR_OUT_OF_MEMORY")
		assert.Equal(t, admissionCounts{failed: 1}, *n)
		requireCUDABaseline(t, r, driverFree)
	})
}
