package bench

import (
	"errors"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var palette = []color.Color{
	color.RGBA{31, 119, 180, 255}, color.RGBA{255, 127, 14, 255}, color.RGBA{44, 160, 44, 255},
	color.RGBA{214, 39, 40, 255}, color.RGBA{148, 103, 189, 255}, color.RGBA{140, 86, 75, 255},
	color.RGBA{227, 119, 194, 255}, color.RGBA{127, 127, 127, 255},
}

// writePlots draws the PNGs for the scenarios that ran; it returns their file names.
func writePlots(dir string, s *Summary) ([]string, error) {
	var names []string
	var errs []error
	save := func(p *plot.Plot, name string, w, h vg.Length) {
		if err := p.Save(w, h, filepath.Join(dir, name)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return
		}
		names = append(names, name)
	}
	if s.Start != nil {
		for i, path := range s.Start.Paths {
			if len(path.Samples) == 0 {
				continue
			}
			p := plot.New()
			p.Title.Text = "session start latency CDF — " + path.Path
			p.X.Label.Text = "ms since connect"
			p.Y.Label.Text = "fraction of sessions"
			p.Legend.Top, p.Legend.Left = false, false
			for j, m := range []struct {
				name string
				f    func(StartSample) float64
			}{{"ready", func(x StartSample) float64 { return x.ReadyMs }},
				{"initial buffer", func(x StartSample) float64 { return x.InitialMs }},
				{"first slice", func(x StartSample) float64 { return x.FirstSliceMs }}} {
				v := make([]float64, len(path.Samples))
				for k, x := range path.Samples {
					v[k] = m.f(x)
				}
				addLine(p, m.name, cdf(v), palette[j])
			}
			save(p, fmt.Sprintf("start_cdf_%d.png", i), 7*vg.Inch, 4.5*vg.Inch)
		}
	}
	if c := s.Churn; c != nil && len(c.Samples) > 0 {
		if err := churnMemoryPlot(filepath.Join(dir, "churn_memory.png"), c); err != nil {
			errs = append(errs, fmt.Errorf("churn_memory.png: %w", err))
		} else {
			names = append(names, "churn_memory.png")
		}
		all := append([]ChurnSample{withCycle(c.Before, 0)}, c.Samples...)
		all = append(all, c.After)
		q := plot.New()
		q.Title.Text = "goroutines, fds and native handles over churn"
		q.X.Label.Text = "cycle"
		q.Y.Label.Text = "count"
		q.Legend.Top, q.Legend.Left = true, true
		for j, m := range []string{"goroutines", "fds", "ledger_live_handles", "trt_live_handles"} {
			pts := make(plotter.XYs, len(all))
			for k, x := range all {
				pts[k] = plotter.XY{X: float64(x.Cycle), Y: x.get(m)}
			}
			addLine(q, m, pts, palette[j])
		}
		save(q, "churn_counts.png", 7*vg.Inch, 4.5*vg.Inch)
	}
	if r := s.Stream; r != nil && len(r.Trials) > 0 {
		drawLateness := func(t *StreamTrial, name string) {
			p := plot.New()
			p.Title.Text = fmt.Sprintf("slice lateness over time, K=%d (%s)", t.K, ternary(t.Holds, "holds real time", "does not hold real time"))
			p.X.Label.Text = "s since the measured window opened"
			p.Y.Label.Text = "lateness ms (> 0: late)"
			p.Legend.Top = true
			for i, ss := range t.Sessions {
				pts := make(plotter.XYs, len(ss.Series))
				for k, x := range ss.Series {
					pts[k] = plotter.XY{X: x.T, Y: x.LatenessMs}
				}
				if len(pts) == 0 {
					continue
				}
				sc, err := plotter.NewScatter(pts)
				if err != nil {
					continue
				}
				sc.GlyphStyle.Color = palette[i%len(palette)]
				sc.GlyphStyle.Radius = vg.Points(1.5)
				p.Add(sc)
				if i < 8 {
					p.Legend.Add(fmt.Sprintf("session %d", i), sc)
				}
			}
			zero := plotter.NewFunction(func(float64) float64 { return 0 })
			zero.Color = color.Black
			zero.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
			p.Add(zero)
			save(p, name, 8*vg.Inch, 4.5*vg.Inch)
		}
		// The best trial (the largest K that holds; the first trial when none holds), and the
		// first failing K beside it unless that is the same trial.
		best := bestTrial(r)
		if best != nil {
			drawLateness(best, "stream_lateness.png")
		}
		for i := range r.Trials {
			if t := &r.Trials[i]; !t.Holds && t.K == r.FirstFailK && t != best {
				drawLateness(t, "stream_lateness_failing.png")
			}
		}
	}
	return names, errors.Join(errs...)
}

func withCycle(s ChurnSample, c int) ChurnSample { s.Cycle = c; return s }

// churnMemoryPlot draws memory over churn as two panels with their own axes: the device
// ledger (GiB: a model resident is many GiB) above, the process's RSS and Go heap (MiB)
// below, each with the between-session samples as lines and the mid-session samples as
// points, so a live session's cost and any growth are both visible.
func churnMemoryPlot(path string, c *ChurnResult) error {
	idle := append([]ChurnSample{withCycle(c.Before, 0)}, c.Samples...)
	idle = append(idle, c.After)
	series := func(samples []ChurnSample, metric string, unit float64) plotter.XYs {
		pts := make(plotter.XYs, len(samples))
		for k, x := range samples {
			pts[k] = plotter.XY{X: float64(x.Cycle), Y: x.get(metric) / unit}
		}
		return pts
	}
	panel := func(title, ylabel string, unit float64, metrics ...string) *plot.Plot {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text = "cycle"
		p.Y.Label.Text = ylabel
		p.Legend.Top, p.Legend.Left = true, true
		for j, m := range metrics {
			addLine(p, m+" (between sessions)", series(idle, m, unit), palette[j])
			if pts := series(c.LiveSamples, m, unit); len(pts) > 0 {
				if sc, err := plotter.NewScatter(pts); err == nil {
					sc.GlyphStyle.Color = palette[j]
					sc.GlyphStyle.Radius = vg.Points(2.5)
					p.Add(sc)
					p.Legend.Add(m+" (mid-session)", sc)
				}
			}
		}
		return p
	}
	ledger := panel(fmt.Sprintf("device ledger over %d start/stop cycles", c.Cycles), "GiB", 1<<30, "ledger_used_bytes")
	proc := panel("process memory", "MiB", 1<<20, "rss_bytes", "heap_inuse_bytes")
	const w, h = 7 * vg.Inch, 8 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: vg.Millimeter, PadY: 3 * vg.Millimeter, PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
	canvases := plot.Align([][]*plot.Plot{{ledger}, {proc}}, tiles, dc)
	ledger.Draw(canvases[0][0])
	proc.Draw(canvases[1][0])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func cdf(v []float64) plotter.XYs {
	s := slices.Clone(v)
	slices.Sort(s)
	pts := make(plotter.XYs, len(s))
	for i, x := range s {
		pts[i] = plotter.XY{X: x, Y: float64(i+1) / float64(len(s))}
	}
	return pts
}

func addLine(p *plot.Plot, name string, pts plotter.XYs, c color.Color) {
	if len(pts) == 0 {
		return
	}
	l, err := plotter.NewLine(pts)
	if err != nil {
		return
	}
	l.Color = c
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
}
