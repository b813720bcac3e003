// Package trttest holds test helpers for code that uses the native shim: leak checks
// every test reuses, and small constructors with cleanup registered.
package trttest

import (
	"fmt"
	"testing"

	"github.com/demon-audio/demon/trt"
)

// NoLeaks registers a check, run when the test ends (after the test's own cleanups, which
// run in reverse order of registration: call NoLeaks first), that every native handle
// created through package trt was closed.
func NoLeaks(t testing.TB) {
	t.Helper()
	before := trt.LiveHandles()
	t.Cleanup(func() {
		if n := trt.LiveHandles(); n != before {
			t.Errorf("native handles leaked: %d live at the end, %d at the start", n, before)
		}
	})
}

// HostDevice creates a host device of the given capacity (and an unarmed fault registry
// when faults is nil) and closes it at the end of the test.
func HostDevice(t testing.TB, capacity uint64, faults *trt.Faults) *trt.Device {
	t.Helper()
	d, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceHost, CapacityBytes: capacity, Faults: faults})
	if err != nil {
		t.Fatalf("create host device: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// Faults creates a fault registry armed with spec and closes it at the end of the test.
func Faults(t testing.TB, spec string) *trt.Faults {
	t.Helper()
	f, err := trt.NewFaults(spec)
	if err != nil {
		t.Fatalf("create faults %q: %v", spec, err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// Snapshot returns the device's ledger or fails the test.
func Snapshot(t testing.TB, d *trt.Device) trt.Ledger {
	t.Helper()
	l, err := d.Ledger()
	if err != nil {
		t.Fatalf("ledger: %v", err)
	}
	return l
}

// RequireBaseline fails the test unless the device's use is exactly back at base: same
// used bytes, same live handles, and every handle kind and every owner holding exactly
// the bytes and handles it held at base (a kind or owner listed on one side only must
// hold nothing on the other).
func RequireBaseline(t testing.TB, d *trt.Device, base trt.Ledger) {
	t.Helper()
	if diff := baselineDiff(Snapshot(t, d), base); diff != "" {
		t.Fatalf("ledger not at baseline: %s", diff)
	}
}

// baselineDiff says how now differs from base in what RequireBaseline compares ("" when
// it does not): the totals first, then the first handle kind, then the first owner.
func baselineDiff(now, base trt.Ledger) string {
	if now.Totals.UsedBytes != base.Totals.UsedBytes || now.Totals.LiveHandles != base.Totals.LiveHandles {
		return fmt.Sprintf("used %d bytes / %d handles, baseline %d bytes / %d handles; kinds now %+v; owners now %+v",
			now.Totals.UsedBytes, now.Totals.LiveHandles, base.Totals.UsedBytes, base.Totals.LiveHandles, now.ByKind, now.ByOwner)
	}
	if diff := entriesDiff("handle kind", now.ByKind, base.ByKind, now.Kind, base.Kind); diff != "" {
		return diff
	}
	return entriesDiff("owner", now.ByOwner, base.ByOwner, now.Owner, base.Owner)
}

// entriesDiff compares the used bytes and live handles of every entry listed now or at
// base, looked up on both sides (an entry not listed holds nothing).
func entriesDiff(what string, listedNow, listedAtBase []trt.LedgerEntry, nowOf, baseOf func(name string) trt.LedgerEntry) string {
	for _, listed := range [][]trt.LedgerEntry{listedNow, listedAtBase} {
		for _, e := range listed {
			n, b := nowOf(e.Name), baseOf(e.Name)
			if n.UsedBytes != b.UsedBytes || n.LiveHandles != b.LiveHandles {
				return fmt.Sprintf("%s %q holds %d bytes / %d handles, baseline %d / %d", what, e.Name, n.UsedBytes, n.LiveHandles, b.UsedBytes, b.LiveHandles)
			}
		}
	}
	return ""
}
