package trttest

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/demon-audio/demon/trt"
)

// The baseline compares the totals, every handle kind and every owner, in both directions.
func TestBaselineDiff(t *testing.T) {
	entry := func(name string, bytes uint64, handles int64) trt.LedgerEntry {
		return trt.LedgerEntry{Name: name, UsedBytes: bytes, PeakBytes: bytes, LiveHandles: handles}
	}
	base := trt.Ledger{
		Totals:  trt.LedgerTotals{UsedBytes: 100, LiveHandles: 1},
		ByKind:  []trt.LedgerEntry{entry("buffer", 100, 1)},
		ByOwner: []trt.LedgerEntry{entry("model:x", 100, 1)},
	}
	cases := []struct {
		name string
		now  trt.Ledger
		want string // "" at baseline, else a part of the difference
	}{
		{"same", base, ""},
		{"peak and counters do not matter", trt.Ledger{
			Totals: trt.LedgerTotals{UsedBytes: 100, PeakBytes: 900, Allocations: 7, Frees: 6, LiveHandles: 1},
			ByKind: []trt.LedgerEntry{{Name: "buffer", UsedBytes: 100, PeakBytes: 900, LiveHandles: 1}}, ByOwner: base.ByOwner,
		}, ""},
		{"totals", trt.Ledger{Totals: trt.LedgerTotals{UsedBytes: 101, LiveHandles: 1}, ByKind: base.ByKind, ByOwner: base.ByOwner}, "used 101 bytes / 1 handles, baseline 100 bytes / 1 handles"},
		{"same totals, bytes moved to another kind", trt.Ledger{
			Totals: base.Totals, ByKind: []trt.LedgerEntry{entry("engine", 100, 1)}, ByOwner: base.ByOwner,
		}, `handle kind "engine" holds 100 bytes / 1 handles, baseline 0 / 0`},
		{"same totals, a kind's handle became another's", trt.Ledger{
			Totals: base.Totals, ByKind: []trt.LedgerEntry{entry("buffer", 100, 0), entry("context", 0, 1)}, ByOwner: base.ByOwner,
		}, `handle kind "buffer" holds 100 bytes / 0 handles, baseline 100 / 1`},
		{"a kind listed only at base", trt.Ledger{
			Totals: base.Totals, ByKind: nil, ByOwner: base.ByOwner,
		}, `handle kind "buffer" holds 0 bytes / 0 handles, baseline 100 / 1`},
		{"same totals, bytes moved to another owner", trt.Ledger{
			Totals: base.Totals, ByKind: base.ByKind, ByOwner: []trt.LedgerEntry{entry("session:a", 100, 1)},
		}, `owner "session:a" holds 100 bytes / 1 handles, baseline 0 / 0`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := baselineDiff(tc.now, base)
			if tc.want == "" {
				assert.Empty(t, got)
				return
			}
			assert.Contains(t, got, tc.want)
		})
	}
}
