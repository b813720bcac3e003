package trt

/*
#include "demon/demon.h"
*/
import "C"

// LedgerTotals are a device's memory and handle totals.
type LedgerTotals struct {
	CapacityBytes uint64
	UsedBytes     uint64
	PeakBytes     uint64
	Allocations   uint64
	Frees         uint64
	Failed        uint64
	LiveHandles   int64
}

// FreeBytes is the capacity not in use.
func (t LedgerTotals) FreeBytes() uint64 { return t.CapacityBytes - t.UsedBytes }

// LedgerEntry is the use attributed to one handle kind or owner tag.
type LedgerEntry struct {
	Name        string
	UsedBytes   uint64
	PeakBytes   uint64
	LiveHandles int64
}

// Ledger is a snapshot of a device's accounting.
type Ledger struct {
	Totals LedgerTotals
	// ByKind lists handle kinds ("buffer", "engine", ...) with live use, sorted by name.
	ByKind []LedgerEntry
	// ByOwner lists owner tags with live use, sorted by name.
	ByOwner []LedgerEntry
}

// Owner returns the entry for owner tag name (zero if it holds nothing).
func (l Ledger) Owner(name string) LedgerEntry { return find(l.ByOwner, name) }

// Kind returns the entry for handle kind name (zero if it holds nothing).
func (l Ledger) Kind(name string) LedgerEntry { return find(l.ByKind, name) }

func find(entries []LedgerEntry, name string) LedgerEntry {
	for _, e := range entries {
		if e.Name == name {
			return e
		}
	}
	return LedgerEntry{Name: name}
}

// Totals returns the device's totals.
func (d *Device) Totals() (LedgerTotals, error) {
	var t LedgerTotals
	err := d.use("ledger totals", func(h *C.dm_device) error {
		var ct C.dm_ledger_totals
		var e C.dm_error
		if err := check("ledger totals", C.dm_ledger_totals_get(h, &ct, &e), &e); err != nil {
			return err
		}
		t = totalsFromC(&ct)
		return nil
	})
	return t, err
}

// Ledger returns a snapshot of totals, per-kind and per-owner use.
func (d *Device) Ledger() (Ledger, error) {
	var l Ledger
	var err error
	if l.Totals, err = d.Totals(); err != nil {
		return l, err
	}
	if l.ByKind, err = d.entries("ledger by kind", true); err != nil {
		return l, err
	}
	l.ByOwner, err = d.entries("ledger by owner", false)
	return l, err
}

// ResetPeak sets every peak to the current use.
func (d *Device) ResetPeak() {
	_ = d.use("reset peak", func(h *C.dm_device) error {
		C.dm_ledger_reset_peak(h)
		return nil
	})
}

func (d *Device) entries(op string, byKind bool) ([]LedgerEntry, error) {
	var out []LedgerEntry
	err := d.use(op, func(h *C.dm_device) error {
		buf := make([]C.dm_ledger_entry, 16)
		for {
			var n C.int
			var e C.dm_error
			var rc C.int
			if byKind {
				rc = C.dm_ledger_by_kind(h, &buf[0], C.int(len(buf)), &n, &e)
			} else {
				rc = C.dm_ledger_by_owner(h, &buf[0], C.int(len(buf)), &n, &e)
			}
			if err := check(op, rc, &e); err != nil {
				return err
			}
			if int(n) > len(buf) {
				buf = make([]C.dm_ledger_entry, int(n))
				continue
			}
			out = make([]LedgerEntry, 0, int(n))
			for _, ce := range buf[:n] {
				out = append(out, LedgerEntry{
					Name:        C.GoString(&ce.name[0]),
					UsedBytes:   uint64(ce.used_bytes),
					PeakBytes:   uint64(ce.peak_bytes),
					LiveHandles: int64(ce.live_handles),
				})
			}
			return nil
		}
	})
	return out, err
}

// totalsFromC converts the shim's totals (ledger or staging) in one place.
func totalsFromC(ct *C.dm_ledger_totals) LedgerTotals {
	return LedgerTotals{
		CapacityBytes: uint64(ct.capacity_bytes),
		UsedBytes:     uint64(ct.used_bytes),
		PeakBytes:     uint64(ct.peak_bytes),
		Allocations:   uint64(ct.allocations),
		Frees:         uint64(ct.frees),
		Failed:        uint64(ct.failed),
		LiveHandles:   int64(ct.live_handles),
	}
}
