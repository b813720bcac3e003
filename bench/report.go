package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Comparison puts one of our figures next to DEMON's published one, saying what each was
// measured on.
type Comparison struct {
	Metric   string  `json:"metric"`
	Ours     float64 `json:"ours"`
	Unit     string  `json:"unit"`
	OursOn   string  `json:"ours_measured_on"`
	Theirs   float64 `json:"theirs"`
	TheirsOn string  `json:"theirs_measured_on"`
	Ratio    float64 `json:"ratio_ours_over_theirs"`
	Note     string  `json:"note"`
}

// DEMON's published figures (spec/engine.md §6, spec/lifecycle.md §7).
const (
	demonWarmStartMs = 5500  // "warm second session 5–6 s" to ready
	demonColdStartMs = 40000 // "cold first streaming session to ready ~40 s"
	demonTickMs      = 43    // depth 4, steps 8, T=1500, 2B turbo all-TRT, RTX 5090
	demonHW          = "RTX 5090, TensorRT, 2B turbo model (DEMON README / streaming/warmup.py)"
)

func comparisons(s *Summary) []Comparison {
	on := fmt.Sprintf("%s, %d cores; engine %s, %s decoder; %s device %s (%s)",
		s.Machine.CPUModel, s.Machine.Cores, s.Setup.Engine, s.Setup.Decoder, s.Setup.DeviceKind, s.Setup.DeviceDesc, s.Setup.Mode)
	var out []Comparison
	add := func(c Comparison) {
		if c.Theirs > 0 {
			c.Ratio = c.Ours / c.Theirs
		}
		out = append(out, c)
	}
	if s.Start != nil && len(s.Start.Paths) > 0 {
		p := s.Start.Paths[0]
		if p.Sessions > 0 {
			add(Comparison{Metric: "warm session start, connect → ready (p50)", Ours: p.ReadyMs.P50, Unit: "ms", OursOn: on + "; path " + p.Path,
				Theirs: demonWarmStartMs, TheirsOn: demonHW,
				Note: "DEMON loads a full model per session (decoder ~3 s, LoRA refit ~7 s, session/conditioning ~10 s); demon shares one model loaded at boot, so a start is source encode + conditioning + stream allocation. Different work, different hardware: the ratio is not an engine speed-up."})
			add(Comparison{Metric: "warm session start, connect → first slice (p50)", Ours: p.FirstSliceMs.P50, Unit: "ms", OursOn: on + "; path " + p.Path,
				Theirs: demonWarmStartMs, TheirsOn: demonHW + " (to ready; DEMON publishes no time-to-first-slice)",
				Note: "ours includes the first ~2·steps/depth pipeline ticks; theirs stops at ready"})
			if s.Setup.ModelLoadS > 0 && p.First != nil {
				add(Comparison{Metric: "cold start: model load + first session to ready", Ours: 1000*s.Setup.ModelLoadS + p.First.ReadyMs, Unit: "ms", OursOn: on,
					Theirs: demonColdStartMs, TheirsOn: demonHW,
					Note: "our model load maps reference engines (realistic footprints are reserved lazily, not copied to a GPU); theirs deserialises TRT engines and builds the pipeline"})
			}
		}
	}
	if s.Tick != nil {
		add(Comparison{Metric: fmt.Sprintf("tick, depth %d / %d steps / T=%d (mean)", s.Tick.Depth, s.Tick.Steps, s.Tick.Frames), Ours: s.Tick.TickMs.Mean, Unit: "ms",
			OursOn: on + "; " + s.Tick.Decoder + " decoder", Theirs: demonTickMs, TheirsOn: demonHW,
			Note: "the tiny DiT has the 2B decoder's tensor contract, not its compute; the ratio compares a CPU stand-in with a GPU model and says nothing about what a TensorRT build of demon would do"})
	}
	return out
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func f1(v float64) string { return fmt.Sprintf("%.1f", v) }
func f2(v float64) string { return fmt.Sprintf("%.2f", v) }

func mib(v float64) string { return fmt.Sprintf("%.1f MiB", v/(1<<20)) }

func table(b *strings.Builder, head []string, rows [][]string) {
	b.WriteString("| " + strings.Join(head, " | ") + " |\n|")
	for range head {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	b.WriteString("\n")
}

// Markdown renders the summary as tables.
func Markdown(s *Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# demon-bench — %s\n\n", s.Started.Format("2006-01-02 15:04 UTC"))
	m, st := s.Machine, s.Setup
	table(&b, []string{"machine", "value"}, [][]string{
		{"CPU", fmt.Sprintf("%s (%d cores, GOMAXPROCS %d)", m.CPUModel, m.Cores, m.GOMAXPROCS)},
		{"memory", mib(float64(m.MemTotal))},
		{"Go / OS", fmt.Sprintf("%s, %s/%s, kernel %s", m.GoVersion, m.OS, m.Arch, m.Kernel)},
		{"mode", st.Mode + ternary(st.Target != "", " → "+st.Target, "")},
		{"client path", st.ClientPath},
		{"device", st.DeviceKind + ": " + st.DeviceDesc},
		{"engines", st.Engine},
		{"profile", fmt.Sprintf("%s (%s decoder, %d s, T=%d latent frames), footprints %s", st.Profile, st.Decoder, st.ProfileS, st.Latents, st.Footprints)},
		{"pipeline", fmt.Sprintf("depth %d, %d steps, tick interval %.0f ms", st.Depth, st.Steps, st.TickMs)},
		{"source", st.Fixture},
		{"one-time setup", ternary(st.Target != "", "done by the target demond (not measured here)",
			fmt.Sprintf("repository build %.2f s, model load %.2f s", st.RepoBuildS, st.ModelLoadS))},
		{"run wall time", fmt.Sprintf("%.1f s", s.WallS)},
	})

	if r := s.Start; r != nil {
		b.WriteString("## start — connect → ready → initial buffer → first slice (warm)\n\n")
		var rows [][]string
		for _, p := range r.Paths {
			d := func(x Dist) string { return fmt.Sprintf("%s / %s / %s", f1(x.P50), f1(x.P95), f1(x.P99)) }
			first := "—"
			if p.First != nil {
				first = fmt.Sprintf("%s / %s", f1(p.First.ReadyMs), f1(p.First.FirstSliceMs))
			}
			rows = append(rows, []string{p.Path, fmt.Sprint(p.Sessions), fmt.Sprint(p.Errors), d(p.ReadyMs), d(p.InitialMs), d(p.FirstSliceMs), f1(p.CloseMs.P50), first})
		}
		table(&b, []string{"path", "n", "errors", "ready ms p50/p95/p99", "initial buffer ms p50/p95/p99", "first slice ms p50/p95/p99", "close ms p50", "first after load: ready / first slice ms"}, rows)
	}

	if r := s.Churn; r != nil {
		fmt.Fprintf(&b, "## churn — %d start/stop cycles (%s)\n\nReadings: %s. Cycle time p50 %s ms, p99 %s ms; %d errors.\n\n",
			r.Cycles, r.Path, r.Source, f1(r.CycleMs.P50), f1(r.CycleMs.P99), r.Errors)
		var rows [][]string
		for _, name := range churnMetrics {
			fmtv := func(v float64) string {
				if strings.HasSuffix(name, "bytes") {
					return mib(v)
				}
				return fmt.Sprintf("%.0f", v)
			}
			fmtg := func(v float64) string {
				if strings.HasSuffix(name, "bytes") {
					return fmt.Sprintf("%+.2f MiB", v/(1<<20))
				}
				return fmt.Sprintf("%+.1f", v)
			}
			rows = append(rows, []string{name, fmtv(r.Before.get(name)), fmtv(r.Peak.get(name)), fmtv(r.After.get(name)), fmtg(r.GrowthPer1000[name]), fmtg(r.SlopePer1000[name]), fmtv(r.SpreadBetween[name])})
		}
		table(&b, []string{"metric", "before", "peak during", "after", "growth / 1000 cycles (after−before)", "slope / 1000 cycles (fit)", "swing between sessions (max−min)"}, rows)
		fmt.Fprintf(&b, "Peak during is over %d samples between sessions and %d taken mid-session (a session streaming, after its first slice). "+
			"**A live session costs %s of ledger** over the baseline (p50; max %s); the ledger's own high-water mark was %s (%s). "+
			"Growth and slope use the between-session samples: what is left once each session has closed. "+
			"Growth per 1000 cycles extrapolates this run: a reading that swings from cycle to cycle with nothing leaking (RSS: the Go heap and the C++ allocator return pages lazily) "+
			"extrapolates its swing too, so only growth that persists beyond the swing as --cycles grows is a leak.\n\n",
			len(r.Samples), len(r.LiveSamples), mib(r.LiveLedgerBytes.P50), mib(r.LiveLedgerBytes.Max), mib(r.LedgerPeakBytes), r.LedgerPeakSource)
	}

	if r := s.Faults; r != nil {
		fmt.Fprintf(&b, "## faults — failed starts at every session fault point, each followed by a retry\n\n"+
			"**%d failures injected (%d fired), bytes leaked: %d, handles leaked: %d, goroutines leaked: %d, retry success: %d/%d (%.0f%%)**; "+
			"cleanup (fault fired → ledger back at baseline) p50 %s ms, p99 %s ms; failed start p50 %s ms, p99 %s ms. Baseline (model resident): %s; a good session makes %d device allocations and %d execution contexts.\n\n"+
			"Cleanup is timed by a watcher goroutine that polls the armed point's hit counter and the ledger every ~0.1 ms (the resolution of these figures): "+
			"from the moment the fault fires to the first moment the ledger is back at its baseline. On the session API that span is the rollback inside Create, "+
			"which is synchronous: by the time the caller sees the failure the ledger is already back (failure seen → baseline: p99 %s ms over all attempts). "+
			"On the WebSocket (handshake.*) it is the server's teardown of the session it had created.%s\n\n",
			r.Attempts, r.Fired, r.BytesLeaked, r.HandlesLeaked, r.GoroutinesLeaked, r.RetryOK, r.Retries, 100*r.RetrySuccessRate,
			f2(r.CleanupMs.P50), f2(r.CleanupMs.P99), f1(r.FailMs.P50), f1(r.FailMs.P99), mib(float64(r.BaselineBytes)), r.AllocsPerSession, r.ContextsPerStart,
			f2(r.ResidualMs.P99), ternary(r.DriverChecked, " On this GPU each case also compares the driver's settled free memory before and after it (a bounded poll first): driver leaked bytes.", ""))
		var rows [][]string
		for _, c := range r.Cases {
			row := []string{"`" + c.Spec + "`", shortPath(c.Path), fmt.Sprintf("%d/%d", c.Fired, c.Attempts), fmt.Sprint(c.LeakedBytes), fmt.Sprint(c.LeakedHandles),
				fmt.Sprintf("%d/%d", c.RetryOK, c.Retries), f1(c.FailMs.P50), f2(c.CleanupMs.P50) + " / " + f2(c.CleanupMs.P99), strings.Join(c.Windows, ", ")}
			if r.DriverChecked {
				row = append(row, fmt.Sprint(c.DriverLeakedBytes))
			}
			rows = append(rows, row)
		}
		head := []string{"fault", "path", "fired", "leaked bytes", "leaked handles", "retry ok", "fail ms p50", "cleanup ms p50 / p99", "reported as"}
		if r.DriverChecked {
			head = append(head, "driver leaked bytes")
		}
		table(&b, head, rows)
	}

	if r := s.Stream; r != nil {
		fmt.Fprintf(&b, "## stream — K concurrent sessions at real-time pacing (%s)\n\nHolds real time: %s. CPU: %s.\n\n**Largest K that holds real time on this machine: %d** (largest also keeping the configured pace: %d)%s (search %.0f s).\n\n",
			r.Path, r.Criterion, r.CPUSource, r.MaxK, r.MaxKPace, ternary(r.Bounded, " (search bounded by --max-k / --search-budget)", ""), r.SearchS)
		var rows [][]string
		for _, t := range r.Trials {
			// Tick readings come from the run-loop hook, which only an in-process run has.
			ticksPerS, tickMs := "n/a (remote)", "n/a (remote)"
			if t.TickMs.N > 0 {
				ticksPerS, tickMs = f1(t.TicksPerS), f1(t.TickMs.P50)+" / "+f1(t.TickMs.P99)
			}
			rows = append(rows, []string{fmt.Sprint(t.K), ternary(t.Holds, "yes", "no") + ternary(t.Holds && !t.HoldsPace, " (pace no)", ""), f2(t.SliceRate), ticksPerS, fmt.Sprintf("%d/%d", t.Late, t.Slices), fmt.Sprintf("%d (%.2f s stale)", t.Underruns, t.StaleS),
				f1(t.LatenessMs.P50) + " / " + f1(t.LatenessMs.P99) + " / " + f1(t.LatenessMs.Max), tickMs,
				fmt.Sprintf("%.2f s (%.0f%% of a core)", t.CPUPerSessionS, 100*t.CPUPerSession), t.Reason})
		}
		table(&b, []string{"K", "real time", "slices/s/session", "ticks/s/session", "late", "underruns", "lateness ms p50/p99/max", "tick ms p50/p99", "CPU per session", "why not"}, rows)
		if t := bestTrial(r); t != nil {
			fmt.Fprintf(&b, "Per session at K=%d:\n\n", t.K)
			var rows [][]string
			for i, ss := range t.Sessions {
				rows = append(rows, []string{fmt.Sprint(i), fmt.Sprint(ss.Slices), f2(ss.SliceRate), f2(ss.FreshRatio) + "×", fmt.Sprint(ss.Late), fmt.Sprintf("%d (%.2f s)", ss.Underruns, ss.StaleS),
					f1(ss.LatenessMs.P50) + " / " + f1(ss.LatenessMs.P99), f1(ss.TickMs.P50) + " / " + f1(ss.TickMs.P99), ternary(ss.EndedEarly, "yes", "no")})
			}
			table(&b, []string{"session", "slices", "slices/s", "fresh audio / wall", "late", "underruns", "lateness ms p50/p99", "tick ms p50/p99 (decoding ticks)", "ended early"}, rows)
		}
		b.WriteString("Lateness = client playhead (wall time since the initial buffer, looping) − slice window start; negative means the slice arrived ahead of the playhead. Late: > 0. Underrun: two consecutive slices leave a stretch of the track (> 1 latent frame) unpatched, which the playhead then plays stale (the browser never runs dry: it loops its buffer, spec/lifecycle.md §6.3).\n\n")
	}

	if t := s.Tick; t != nil {
		fmt.Fprintf(&b, "## tick — depth %d / %d steps / T=%d, %s decoder, %d ticks\n\n", t.Depth, t.Steps, t.Frames, t.Decoder, t.Iters)
		rows := [][]string{
			{"Go wall per Stream.Tick", f2(t.WallMs.Mean) + " ms", f2(t.WallMs.P50) + " / " + f2(t.WallMs.P99)},
			{"shim DiT tick (tick_ms)", f2(t.TickMs.Mean) + " ms", f2(t.TickMs.P50) + " / " + f2(t.TickMs.P99)},
			{"… inside the decoder engine (engine_ms)", f2(t.EngineMs.Mean) + " ms", f2(t.EngineMs.P50) + " / " + f2(t.EngineMs.P99)},
			{"windowed VAE decode (dec_ms, decoding ticks)", f2(t.DecMs.Mean) + " ms", f2(t.DecMs.P50) + " / " + f2(t.DecMs.P99)},
			{"… inside the VAE engine (vae_ms)", f2(t.VAEMs.Mean) + " ms", f2(t.VAEMs.P50) + " / " + f2(t.VAEMs.P99)},
			{"outside engine execution (wall − engine − vae)", f2(t.OverheadMs.Mean) + " ms", f2(t.OverheadMs.P50) + " / " + f2(t.OverheadMs.P99)},
			{"**overhead: share of the Go wall time per tick outside engines**", fmt.Sprintf("**%.2f %%**", t.OverheadPct), "goal ≤ 1 %"},
			{"cgo + Go boundary (wall − tick − dec)", fmt.Sprintf("%.1f µs", t.BoundaryUs), ""},
			{"cgo calls per tick", f2(t.CgoPerTick), ""},
			{"Go allocations per tick (AllocsPerRun)", f2(t.AllocsPerTick), fmt.Sprintf("%.0f B/tick (MemStats)", t.BytesPerTick)},
			{"slices decoded per tick (whole cycles)", f2(t.DecodedPerTick), ""},
			{"slices per second", f2(t.SlicesPerS), fmt.Sprintf("real time needs %s/s (%s× that)", f2(t.NeedPerS), f2(t.RealtimeX))},
		}
		if l := t.Loop; l != nil {
			rows = append(rows,
				[]string{"session run loop: period per tick", f2(l.PeriodMs) + " ms", fmt.Sprintf("native tick+dec %s ms", f2(l.NativeMs))},
				[]string{"session run loop: overhead (period − native)", fmt.Sprintf("%.3f ms (%.2f %%)", l.LoopOverheadMs, l.LoopOverhead), ""},
				[]string{"session run loop: cgo calls / Go allocs per tick", fmt.Sprintf("%.2f / %.2f", l.CgoPerTick, l.AllocsPerTick), fmt.Sprintf("%.0f B/tick", l.BytesPerTick)},
			)
		}
		table(&b, []string{"measure", "mean", "p50 / p99"}, rows)
	}

	if len(s.Compare) > 0 {
		b.WriteString("## against DEMON's published figures (context, not a contest)\n\n")
		var rows [][]string
		for _, c := range s.Compare {
			rows = append(rows, []string{c.Metric, fmt.Sprintf("%.1f %s", c.Ours, c.Unit), c.OursOn, fmt.Sprintf("%.0f %s", c.Theirs, c.Unit), c.TheirsOn, fmt.Sprintf("%.3f×", c.Ratio), c.Note})
		}
		table(&b, []string{"metric", "ours", "ours measured on", "DEMON", "DEMON measured on", "ours / DEMON", "caveat"}, rows)
	}
	if len(s.Skipped) > 0 || len(s.Errors) > 0 {
		b.WriteString("## skipped / failed\n\n")
		keys := make([]string, 0)
		for k := range s.Skipped {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "- %s: skipped — %s\n", k, s.Skipped[k])
		}
		keys = keys[:0]
		for k := range s.Errors {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "- %s: **error** — %s\n", k, s.Errors[k])
		}
		b.WriteString("\n")
	}
	if len(s.Notes) > 0 {
		b.WriteString("## notes\n\n")
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	if len(s.Plots) > 0 {
		b.WriteString("## plots\n\n")
		for _, p := range s.Plots {
			fmt.Fprintf(&b, "![%s](%s)\n", p, p)
		}
	}
	return b.String()
}

func shortPath(p string) string {
	if strings.HasPrefix(p, "websocket") {
		return "websocket"
	}
	return "session API"
}

func ternary(c bool, a, b string) string {
	if c {
		return a
	}
	return b
}

// bestTrial is the trial at the largest real-time K (or the first one).
func bestTrial(r *StreamResult) *StreamTrial {
	var best *StreamTrial
	for i := range r.Trials {
		t := &r.Trials[i]
		if t.Holds && (best == nil || t.K > best.K) {
			best = t
		}
	}
	if best == nil && len(r.Trials) > 0 {
		best = &r.Trials[0]
	}
	return best
}
