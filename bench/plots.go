package bench

import (
	"errors"
	"fmt"
	"image/color"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
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
		p := plot.New()
		p.Title.Text = fmt.Sprintf("memory over %d start/stop cycles", c.Cycles)
		p.X.Label.Text = "cycle"
		p.Y.Label.Text = "MiB"
		p.Legend.Top, p.Legend.Left = true, true
		all := append([]ChurnSample{withCycle(c.Before, 0)}, c.Samples...)
		all = append(all, c.After)
		for j, m := range []string{"ledger_used_bytes", "rss_bytes", "heap_inuse_bytes"} {
			pts := make(plotter.XYs, len(all))
			for k, x := range all {
				pts[k] = plotter.XY{X: float64(x.Cycle), Y: x.get(m) / (1 << 20)}
			}
			addLine(p, m, pts, palette[j])
		}
		save(p, "churn_memory.png", 7*vg.Inch, 4.5*vg.Inch)
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
		draw := func(t *StreamTrial, name string) {
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
		if t := bestTrial(r); t != nil {
			draw(t, "stream_lateness.png")
		}
		for i := range r.Trials {
			if t := &r.Trials[i]; !t.Holds && t.K == r.FirstFailK {
				draw(t, "stream_lateness_failing.png")
			}
		}
	}
	return names, errors.Join(errs...)
}

func withCycle(s ChurnSample, c int) ChurnSample { s.Cycle = c; return s }

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
