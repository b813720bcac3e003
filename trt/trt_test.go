package trt_test

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

const (
	mib = uint64(1) << 20
	gib = uint64(1) << 30
)

func TestVersion(t *testing.T) {
	require.Regexp(t, `^\d+\.\d+\.\d+$`, trt.Version())
}

func TestAllocFreeRoundTripsToBaseline(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 64*mib, nil)
	base := trttest.Snapshot(t, d)
	require.Zero(t, base.Totals.UsedBytes)

	sizes := []uint64{1, 63, 64, 4095, 1 * mib, 3*mib + 7}
	var bufs []*trt.Buffer
	var sum uint64
	for _, s := range sizes {
		b, err := d.Alloc(s, "test:roundtrip")
		require.NoError(t, err)
		bufs = append(bufs, b)
		sum += s
	}
	l := trttest.Snapshot(t, d)
	assert.Equal(t, sum, l.Totals.UsedBytes, "exact requested bytes are accounted")
	assert.Equal(t, sum, l.Totals.PeakBytes)
	assert.Equal(t, int64(len(sizes)), l.Totals.LiveHandles)
	assert.Equal(t, sum, l.Owner("test:roundtrip").UsedBytes)
	assert.Equal(t, trt.LedgerEntry{Name: "buffer", UsedBytes: sum, PeakBytes: sum, LiveHandles: int64(len(sizes))}, l.Kind("buffer"))
	require.Len(t, l.ByKind, 1, "buffers are the only kind allocated")

	for _, b := range bufs {
		require.NoError(t, b.Close())
		require.NoError(t, b.Close(), "Close is idempotent")
	}
	trttest.RequireBaseline(t, d, base)
	after := trttest.Snapshot(t, d)
	assert.Equal(t, sum, after.Totals.PeakBytes, "peak remembers the high-water mark")
	assert.Equal(t, uint64(len(sizes)), after.Totals.Allocations)
	assert.Equal(t, uint64(len(sizes)), after.Totals.Frees)
	assert.Empty(t, after.ByOwner, "owners with nothing live are not listed")
	assert.Empty(t, after.ByKind, "kinds with nothing live are not listed")
	assert.Zero(t, after.Kind("buffer").UsedBytes)
	d.ResetPeak()
	assert.Zero(t, trttest.Snapshot(t, d).Totals.PeakBytes)
}

func TestOutOfMemoryAtExactCapacity(t *testing.T) {
	trttest.NoLeaks(t)
	const capacity = 10*mib + 123
	d := trttest.HostDevice(t, capacity, nil)

	a, err := d.Alloc(capacity-100, "test:a")
	require.NoError(t, err)
	defer a.Close()

	_, err = d.Alloc(101, "test:b")
	require.ErrorIs(t, err, trt.ErrOutOfMemory)
	var te *trt.Error
	require.ErrorAs(t, err, &te)
	assert.Equal(t, trt.CodeOutOfMemory, te.Code)
	assert.Contains(t, te.Msg, "requested 101 bytes")
	assert.Contains(t, te.Msg, "100 bytes free")

	b, err := d.Alloc(100, "test:b")
	require.NoError(t, err, "exactly the free bytes fit")
	defer b.Close()
	tot, err := d.Totals()
	require.NoError(t, err)
	assert.Equal(t, uint64(capacity), tot.UsedBytes)
	assert.Equal(t, uint64(1), tot.Failed)

	_, err = d.Alloc(1, "test:c")
	require.ErrorIs(t, err, trt.ErrOutOfMemory)
}

// vmRSS returns the process's resident set size (VmRSS in /proc/self/status) in bytes.
func vmRSS(t *testing.T) uint64 {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			require.NoError(t, err, "VmRSS line %q", line)
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/self/status")
	return 0
}

// An allocation the ledger admits but the device cannot make (a mapping larger than the
// address space) fails with ErrOutOfMemory and moves only the failure count: used bytes,
// peak, allocations, frees and the per-kind and per-owner entries stay as they were.
func TestRefusedRawAllocationMovesOnlyTheFailureCount(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 1<<62, nil)
	kept, err := d.Alloc(4096, "test:kept")
	require.NoError(t, err)
	defer kept.Close()
	before := trttest.Snapshot(t, d)

	_, err = d.Alloc(1<<60, "test:refused")
	require.ErrorIs(t, err, trt.ErrOutOfMemory)
	assert.Contains(t, err.Error(), "host mapping of 1152921504606846976 bytes")

	after := trttest.Snapshot(t, d)
	want := before.Totals
	want.Failed++
	assert.Equal(t, want, after.Totals)
	assert.Equal(t, before.ByKind, after.ByKind)
	assert.Equal(t, before.ByOwner, after.ByOwner)
}

func TestLargeCapacityDoesNotCommitMemory(t *testing.T) {
	trttest.NoLeaks(t)
	// A 24 GiB card on a 24 GiB machine: 13.5 GB and 4 GB footprints are mapped, not used.
	d := trttest.HostDevice(t, 24*gib, nil)
	got := make([]byte, 3)
	rssBefore := vmRSS(t)
	dec, err := d.Alloc(13_500_000_000, "model:decoder")
	require.NoError(t, err)
	defer dec.Close()
	enc, err := d.Alloc(4_178_000_000, "model:vae_encode")
	require.NoError(t, err)
	defer enc.Close()
	// Touch a little at both ends: the memory is real.
	require.NoError(t, dec.Write(0, []byte{1, 2, 3}))
	require.NoError(t, dec.Write(13_500_000_000-3, []byte{4, 5, 6}))
	require.NoError(t, dec.Read(13_500_000_000-3, got))
	assert.Equal(t, []byte{4, 5, 6}, got)
	rssAfter := vmRSS(t)
	// Only the touched pages (and whatever else the process did meanwhile) become resident;
	// committing the footprints would add 17.7 GB.
	growth := int64(rssAfter) - int64(rssBefore)
	t.Logf("VmRSS %d kB before, %d kB after mapping 17678000000 bytes: %+d kB", rssBefore>>10, rssAfter>>10, growth>>10)
	assert.Less(t, growth, int64(64*mib), "mapping the footprints committed memory")

	l := trttest.Snapshot(t, d)
	assert.Equal(t, uint64(13_500_000_000), l.Owner("model:decoder").UsedBytes)
	assert.Equal(t, uint64(4_178_000_000), l.Owner("model:vae_encode").UsedBytes)
	_, err = d.Alloc(24*gib-17_678_000_000+1, "session:x")
	require.ErrorIs(t, err, trt.ErrOutOfMemory)
}

func TestPerOwnerAccounting(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 100*mib, nil)
	a1, err := d.Alloc(1000, "session:a")
	require.NoError(t, err)
	a2, err := d.Alloc(24, "session:a")
	require.NoError(t, err)
	b1, err := d.Alloc(2*mib, "session:b")
	require.NoError(t, err)

	l := trttest.Snapshot(t, d)
	assert.Equal(t, trt.LedgerEntry{Name: "session:a", UsedBytes: 1024, PeakBytes: 1024, LiveHandles: 2}, l.Owner("session:a"))
	assert.Equal(t, trt.LedgerEntry{Name: "session:b", UsedBytes: 2 * mib, PeakBytes: 2 * mib, LiveHandles: 1}, l.Owner("session:b"))
	require.Len(t, l.ByOwner, 2)
	assert.Equal(t, "session:a", l.ByOwner[0].Name, "sorted by name")

	require.NoError(t, a1.Close())
	require.NoError(t, a2.Close())
	l = trttest.Snapshot(t, d)
	assert.Zero(t, l.Owner("session:a").UsedBytes)
	assert.Equal(t, 2*mib, l.Owner("session:b").UsedBytes)
	require.NoError(t, b1.Close())
}

func TestBufferReadWriteBounds(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, mib, nil)
	b, err := d.Alloc(16, "test")
	require.NoError(t, err)
	defer b.Close()

	zero := make([]byte, 16)
	require.NoError(t, b.Read(0, zero))
	assert.Equal(t, make([]byte, 16), zero, "allocations are zero-filled")
	require.NoError(t, b.Write(8, []byte("abcdefgh")))
	got := make([]byte, 8)
	require.NoError(t, b.Read(8, got))
	assert.Equal(t, "abcdefgh", string(got))

	err = b.Write(9, []byte("abcdefgh"))
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "overruns a 16-byte buffer")
	require.ErrorIs(t, b.Read(17, nil), trt.ErrInvalidArgument)
	require.ErrorIs(t, b.Read(1<<63, make([]byte, 1)), trt.ErrInvalidArgument, "offset overflow is caught")

	require.NoError(t, b.Close())
	require.ErrorIs(t, b.Write(0, []byte{1}), trt.ErrState)
}

func TestBadInput(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, mib, nil)
	cases := []struct {
		name    string
		run     func() error
		wantErr error
		wantMsg string
	}{
		{"zero size", func() error { _, err := d.Alloc(0, "x"); return err }, trt.ErrInvalidArgument, "size must be > 0"},
		{"empty owner", func() error { _, err := d.Alloc(1, ""); return err }, trt.ErrInvalidArgument, "owner tag must be a non-empty string"},
		{"long owner", func() error { _, err := d.Alloc(1, strings.Repeat("o", 96)); return err }, trt.ErrInvalidArgument, "limit is 95"},
		{"control char owner", func() error { _, err := d.Alloc(1, "a\nb"); return err }, trt.ErrInvalidArgument, "control character"},
		{"unknown device kind", func() error {
			_, err := trt.NewDevice(trt.DeviceOptions{Kind: 7, CapacityBytes: 1})
			return err
		}, trt.ErrInvalidArgument, "unknown device kind 7"},
		{"zero capacity", func() error {
			_, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceHost})
			return err
		}, trt.ErrInvalidArgument, "capacity must be greater than 0"},
		{"negative-looking size", func() error { _, err := d.Alloc(^uint64(0), "x"); return err }, trt.ErrOutOfMemory, "requested 18446744073709551615 bytes"},
		{"unknown fault point", func() error { _, err := trt.NewFaults("no.such.point=error"); return err }, trt.ErrNotFound, "unknown fault point no.such.point"},
		{"malformed fault spec", func() error { _, err := trt.NewFaults("device.alloc"); return err }, trt.ErrInvalidArgument, "want point=action[@N]"},
		{"bad fault action", func() error { _, err := trt.NewFaults("device.alloc=explode"); return err }, trt.ErrInvalidArgument, "unknown action explode"},
		{"bad fault nth", func() error { _, err := trt.NewFaults("device.alloc=error@0"); return err }, trt.ErrInvalidArgument, "@N needs a whole number >= 1"},
		{"bad fault nth text", func() error { _, err := trt.NewFaults("device.alloc=error@x"); return err }, trt.ErrInvalidArgument, "@N needs a whole number >= 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			require.ErrorIs(t, err, tc.wantErr)
			assert.Contains(t, err.Error(), tc.wantMsg)
		})
	}
}

func TestDeviceClosedHandles(t *testing.T) {
	trttest.NoLeaks(t)
	d, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceHost, CapacityBytes: mib})
	require.NoError(t, err)
	require.NoError(t, d.Close())
	require.NoError(t, d.Close(), "Close is idempotent")
	_, err = d.Alloc(1, "x")
	require.ErrorIs(t, err, trt.ErrState)
	_, err = d.Totals()
	require.ErrorIs(t, err, trt.ErrState)
	var nilDev *trt.Device
	require.NoError(t, nilDev.Close(), "Close on nil is a no-op")
}

func TestBufferOutlivesDeviceHandle(t *testing.T) {
	trttest.NoLeaks(t)
	d, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceHost, CapacityBytes: mib})
	require.NoError(t, err)
	b, err := d.Alloc(10, "x")
	require.NoError(t, err)
	require.NoError(t, d.Close())
	// The device's internals live until the last object on it is freed.
	require.NoError(t, b.Write(0, []byte("still ok")))
	require.NoError(t, b.Close())
}

func TestCudaDeviceWithoutBackendFailsClearly(t *testing.T) {
	trttest.NoLeaks(t)
	_, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceCUDA})
	require.Error(t, err)
	assert.True(t, errors.Is(err, trt.ErrUnsupported) || errors.Is(err, trt.ErrCUDA), "got %v", err)
}

func TestExceptionsBecomeErrors(t *testing.T) {
	cases := []struct {
		kind    trt.ThrowKind
		want    error
		wantMsg string
	}{
		{trt.ThrowStd, trt.ErrInternal, "internal error: debug: std exception"},
		{trt.ThrowBadAlloc, trt.ErrOutOfMemory, "bad_alloc"},
		{trt.ThrowDMError, trt.ErrCorrupt, "debug: shim error"},
		{trt.ThrowUnknown, trt.ErrInternal, "unknown exception"},
		{99, trt.ErrInvalidArgument, "unknown kind 99"},
	}
	for _, tc := range cases {
		err := trt.DebugThrow(tc.kind)
		require.ErrorIs(t, err, tc.want, "kind %d", tc.kind)
		assert.Contains(t, err.Error(), tc.wantMsg)
	}
}

func TestFaultPointsFireOnNthHitAndCount(t *testing.T) {
	trttest.NoLeaks(t)
	f := trttest.Faults(t, "device.alloc=error@3")
	d := trttest.HostDevice(t, mib, f)
	base := trttest.Snapshot(t, d)

	var bufs []*trt.Buffer
	for i := 1; i <= 5; i++ {
		b, err := d.Alloc(100, "test")
		if i == 3 {
			require.ErrorIs(t, err, trt.ErrFaultInjected)
			assert.Contains(t, err.Error(), "fault injected at device.alloc (hit 3)")
			continue
		}
		require.NoError(t, err, "hit %d", i)
		bufs = append(bufs, b)
	}
	assert.Equal(t, int64(5), f.Hits("device.alloc"))
	tot, err := d.Totals()
	require.NoError(t, err)
	assert.Equal(t, uint64(400), tot.UsedBytes, "the failed allocation holds nothing")
	assert.Equal(t, uint64(1), tot.Failed)
	for _, b := range bufs {
		require.NoError(t, b.Close())
	}
	trttest.RequireBaseline(t, d, base)
}

func TestFaultPointEveryHitAndOOMAndDisarm(t *testing.T) {
	trttest.NoLeaks(t)
	f := trttest.Faults(t, "")
	d := trttest.HostDevice(t, mib, f)

	require.NoError(t, f.Arm("device.alloc=oom"))
	for range 3 {
		_, err := d.Alloc(1, "x")
		require.ErrorIs(t, err, trt.ErrOutOfMemory)
		assert.Contains(t, err.Error(), "injected at fault point device.alloc")
	}
	require.NoError(t, f.Arm("device.alloc=off"))
	b, err := d.Alloc(1, "x")
	require.NoError(t, err)
	require.NoError(t, b.Close())
	assert.Equal(t, int64(4), f.Hits("device.alloc"))

	require.Error(t, f.Arm("device.alloc=error, bogus=error"))
	b, err = d.Alloc(1, "x")
	require.NoError(t, err, "an invalid spec changes nothing")
	require.NoError(t, b.Close())

	f.Reset()
	assert.Zero(t, f.Hits("device.alloc"))
	assert.Equal(t, int64(-1), f.Hits("no.such.point"))
}

func TestGoSidePointsShareTheRegistry(t *testing.T) {
	trttest.NoLeaks(t)
	f := trttest.Faults(t, "device.create=error@2")
	require.NoError(t, f.Hit("device.create"))
	err := f.Hit("device.create")
	require.ErrorIs(t, err, trt.ErrFaultInjected)
	require.NoError(t, f.Hit("device.create"))
	assert.Equal(t, int64(3), f.Hits("device.create"))
	require.ErrorIs(t, f.Hit("no.such.point"), trt.ErrNotFound)
	var none *trt.Faults
	require.NoError(t, none.Hit("anything"), "a nil registry never fires")
}

func TestDeviceCreateFaultPoint(t *testing.T) {
	trttest.NoLeaks(t)
	f := trttest.Faults(t, "device.create=error")
	_, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceHost, CapacityBytes: mib, Faults: f})
	require.ErrorIs(t, err, trt.ErrFaultInjected)
}

func TestFaultPointsAreDeclared(t *testing.T) {
	points := trt.FaultPoints()
	assert.Contains(t, points, "device.alloc")
	assert.Contains(t, points, "device.create")
}

func TestConcurrentAllocations(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 64*mib, nil)
	base := trttest.Snapshot(t, d)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				b, err := d.Alloc(uint64(1+i+g), "test:concurrent")
				if err != nil {
					t.Error(err)
					return
				}
				if err := b.Close(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	trttest.RequireBaseline(t, d, base)
	tot, err := d.Totals()
	require.NoError(t, err)
	assert.Equal(t, uint64(1600), tot.Allocations)
	assert.Equal(t, tot.Allocations, tot.Frees)
}

func TestDeviceString(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 24*gib, nil)
	assert.Equal(t, "host device (capacity 25769803776 bytes (24.00 GiB))", d.String())
	assert.Equal(t, "host", d.Kind().String())
	k, err := trt.ParseDeviceKind("CUDA")
	require.NoError(t, err)
	assert.Equal(t, trt.DeviceCUDA, k)
	_, err = trt.ParseDeviceKind("tpu")
	require.Error(t, err)
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func TestGoSideHitsCostNothingUnlessTheyFire(t *testing.T) {
	trttest.NoLeaks(t)
	f := trttest.Faults(t, "")
	allocs := testing.AllocsPerRun(1000, func() {
		if err := f.Hit("run.tick"); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs)
	assert.Equal(t, int64(1001), f.Hits("run.tick"))
}

func TestHangReleasedByRearm(t *testing.T) {
	trttest.NoLeaks(t)
	f := trttest.Faults(t, "run.tick=hang@2")
	require.NoError(t, f.Hit("run.tick"))
	done := make(chan error)
	go func() { done <- f.Hit("run.tick") }()
	select {
	case <-done:
		t.Fatal("the second hit should hang")
	case <-time.After(100 * time.Millisecond):
	}
	require.NoError(t, f.Arm("run.tick=off"))
	require.NoError(t, <-done)
}

// A device shares the native registry, so closing Faults before the Device is safe (under
// -asan the next native hit would otherwise read freed memory): the registry is disarmed,
// hits land on live memory, and nothing fires.
func TestClosingFaultsBeforeTheirDevice(t *testing.T) {
	trttest.NoLeaks(t)
	f, err := trt.NewFaults("device.alloc=error@2")
	require.NoError(t, err)
	d := trttest.HostDevice(t, mib, f)
	b1, err := d.Alloc(8, "x")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	b2, err := d.Alloc(8, "x")
	require.NoError(t, err, "hit 2 was armed to fail; closing the registry disarmed it")
	b3, err := d.Alloc(8, "x")
	require.NoError(t, err)
	assert.Same(t, f, d.Faults())
	assert.Equal(t, int64(-1), f.Hits("device.alloc"), "a closed registry reports nothing")
	for _, b := range []*trt.Buffer{b1, b2, b3} {
		require.NoError(t, b.Close())
	}
}

// Closing Faults releases a native hit hung on it: nobody could re-arm it any more.
func TestClosingFaultsReleasesAHungNativeHit(t *testing.T) {
	trttest.NoLeaks(t)
	f, err := trt.NewFaults("device.alloc=hang")
	require.NoError(t, err)
	d := trttest.HostDevice(t, mib, f)
	type result struct {
		b   *trt.Buffer
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := d.Alloc(8, "x")
		done <- result{b, err}
	}()
	// The hit is counted under the registry's lock, which a hung hit gives up only while it
	// waits: one hit recorded means the allocation is parked in the hang.
	require.Eventually(t, func() bool { return f.Hits("device.alloc") == 1 }, 10*time.Second, time.Millisecond)
	select {
	case <-done:
		t.Fatal("the allocation should hang")
	case <-time.After(20 * time.Millisecond):
	}
	require.NoError(t, f.Close())
	select {
	case r := <-done:
		require.NoError(t, r.err)
		require.NoError(t, r.b.Close())
	case <-time.After(5 * time.Second):
		t.Fatal("closing the registry did not release the hung allocation")
	}
}
