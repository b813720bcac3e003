package trt_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/demon-audio/demon/trt"
)

// Depth 4 / steps 8 emits in bursts: 4 decoding ticks, then 4 without. A 20-tick run that
// starts on a burst holds 12 decodes (0.6 per tick); the meter counts the 16 ticks of the two
// whole cycles (8 decodes, 0.5 per tick: the steady-state rate).
func TestTickMeterCountsWholeCycles(t *testing.T) {
	m := trt.TickMeter{Steps: 8}
	for tick := range 20 {
		decoding := tick%8 < 4
		r := trt.TickResult{EngineMs: 9.9}
		wall := 10 * time.Millisecond
		if decoding {
			r.Decoded, r.NumSamples, r.VAEMs = true, 9*1920, 1.98
			wall = 12 * time.Millisecond
		}
		m.Add(wall, r)
	}
	f := m.Figures()
	assert.Equal(t, 16, f.Ticks)
	assert.InDelta(t, 11, f.WallMs, 1e-9, "(4·12 + 4·10)/8")
	// EngineMs and VAEMs are float32s.
	assert.InDelta(t, 9.9+0.99, f.EngineMs, 1e-5)
	assert.InDelta(t, 0.11, f.OverheadMs, 1e-5)
	assert.InDelta(t, 1, f.OverheadPct, 1e-4, "0.11 of 11 ms")
	assert.InDelta(t, 0.5, f.SlicesPerTick, 1e-12)
	assert.InDelta(t, 0.5/0.011, f.SlicesPerS, 1e-9)
	assert.InDelta(t, 1/0.36, f.NeedPerS, 1e-9, "one 0.36 s slice per 0.36 s")
	assert.InDelta(t, f.SlicesPerS/f.NeedPerS, f.RealtimeX, 1e-9)

	// Before a cycle completes, the figures cover every tick.
	short := trt.TickMeter{Steps: 8}
	short.Add(10*time.Millisecond, trt.TickResult{EngineMs: 5})
	assert.Equal(t, 1, short.Figures().Ticks)
	assert.InDelta(t, 50, short.Figures().OverheadPct, 1e-9)
	assert.Zero(t, (&trt.TickMeter{Steps: 8}).Figures().Ticks)
}
