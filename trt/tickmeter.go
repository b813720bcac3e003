package trt

import "time"

// audioRate is the stream's sample rate: 1920 samples per latent frame at 25 frames/s.
const audioRate = 48000

// TickMeter turns a run of stream ticks into the figures the pipeline benchmark reports
// (trt's BenchmarkStreamTick and demon-bench's tick scenario both use it, so they agree):
// the share of the Go wall time per tick spent outside engine execution, and slices per
// second against the real-time need.
//
// Everything is summed over whole emission cycles of Steps ticks only. In steady state a
// slot emits once every Steps ticks, so any Steps consecutive ticks hold the same emits
// (depth 4 / steps 8: a burst of 4 decoding ticks, then 4 without); a window that cut a
// cycle would over- or under-count both slices and the dearer decoding ticks. Start
// measuring after a warm-up of at least Steps ticks.
type TickMeter struct {
	Steps int // ticks per emission cycle (the stream's steps)

	open  tickSums // the cycle in progress
	whole tickSums // completed cycles
	all   tickSums // every tick (used only while no cycle has completed)
}

type tickSums struct {
	ticks, slices, samples int
	wall                   time.Duration
	engineMs               float64
}

func (s *tickSums) add(o tickSums) {
	s.ticks += o.ticks
	s.slices += o.slices
	s.samples += o.samples
	s.wall += o.wall
	s.engineMs += o.engineMs
}

// Add records one tick (or idle decode) that took wall of Go wall time.
func (m *TickMeter) Add(wall time.Duration, r TickResult) {
	t := tickSums{ticks: 1, wall: wall, engineMs: float64(r.EngineMs) + float64(r.VAEMs)}
	if r.Decoded {
		t.slices, t.samples = 1, r.NumSamples
	}
	m.open.add(t)
	m.all.add(t)
	if m.open.ticks >= max(m.Steps, 1) {
		m.whole.add(m.open)
		m.open = tickSums{}
	}
}

// TickFigures are a run's per-tick figures.
type TickFigures struct {
	Ticks         int     // ticks the figures cover (whole cycles)
	WallMs        float64 // Go wall time per tick
	EngineMs      float64 // of WallMs, inside the decoder and windowed VAE engines
	OverheadMs    float64 // WallMs − EngineMs: everything else (sampler math, ring, cgo, Go)
	OverheadPct   float64 // 100·OverheadMs/WallMs; the goal is ≤ 1 %
	SlicesPerTick float64
	SlicesPerS    float64 // decoded slices per wall second
	NeedPerS      float64 // slices per second real time needs: one per slice duration
	RealtimeX     float64 // decoded audio seconds per wall second (SlicesPerS / NeedPerS)
}

// Figures computes the figures over the completed cycles (over every tick while none has
// completed).
func (m *TickMeter) Figures() TickFigures {
	s := m.whole
	if s.ticks == 0 {
		s = m.all
	}
	if s.ticks == 0 || s.wall <= 0 {
		return TickFigures{}
	}
	n := float64(s.ticks)
	f := TickFigures{Ticks: s.ticks, WallMs: float64(s.wall) / float64(time.Millisecond) / n, EngineMs: s.engineMs / n}
	f.OverheadMs = f.WallMs - f.EngineMs
	f.OverheadPct = 100 * f.OverheadMs / f.WallMs
	f.SlicesPerTick = float64(s.slices) / n
	f.SlicesPerS = float64(s.slices) / s.wall.Seconds()
	if s.slices > 0 {
		f.NeedPerS = audioRate * float64(s.slices) / float64(s.samples)
		f.RealtimeX = float64(s.samples) / audioRate / s.wall.Seconds()
	}
	return f
}
