// Command demon-bench runs demon's benchmark scenarios (package bench) in-process or
// against a running demond (--target ws://127.0.0.1:1318/) and writes summary.json,
// summary.md and PNG plots to --out.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/demon-audio/demon/bench"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demon-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg bench.Config
	var scenarios string
	var quiet bool
	var capGiB float64
	fs.StringVar(&cfg.Out, "out", "bench-out", "output directory (summary.json, summary.md, *.png)")
	fs.StringVar(&scenarios, "scenarios", strings.Join(bench.Scenarios, ","), "comma-separated scenarios: "+strings.Join(bench.Scenarios, ","))
	fs.StringVar(&cfg.Target, "target", "", "a running demond's WebSocket URL, e.g. ws://127.0.0.1:1318/ (empty: in-process)")
	fs.IntVar(&cfg.ProfileSeconds, "profile-seconds", 60, "reference profile length in seconds (T = 25/s latent frames)")
	fs.StringVar(&cfg.Decoder, "decoder", "tiny-dit", "reference decoder: tiny-dit or oracle")
	fs.BoolVar(&cfg.ActualFootprints, "actual-footprints", false, "declare only the memory the reference math needs (default: DEMON's realistic GPU footprints)")
	fs.Float64Var(&capGiB, "capacity-gib", 24, "in-process host device capacity, GiB")
	fs.StringVar(&cfg.Device, "device", "host", "in-process device: host (host memory accounted like a GPU) or cuda (a GPU through the CUDA driver)")
	fs.IntVar(&cfg.DeviceOrdinal, "device-ordinal", 0, "in-process cuda device: the GPU's ordinal")
	fs.StringVar(&cfg.Fixture, "fixture", "", "demo track to start sessions from (default: picked for the profile)")
	fs.BoolVar(&cfg.Upload, "upload", false, "WebSocket: upload the track as a PCM frame even if the server has it")
	fs.IntVar(&cfg.Sessions, "sessions", 12, "start: measured sessions per path")
	fs.IntVar(&cfg.WarmSessions, "warm", 1, "start: warm-up sessions per path (reported apart)")
	fs.IntVar(&cfg.Cycles, "cycles", 60, "churn: start/stop cycles")
	fs.IntVar(&cfg.ChurnSlices, "churn-slices", 1, "churn: slices each cycle streams before stopping")
	fs.IntVar(&cfg.FaultRounds, "fault-rounds", 2, "faults: failures per fault (each followed by a retry)")
	fs.IntVar(&cfg.OOMPoints, "oom-points", 4, "faults: device.alloc=oom@N positions spread over a session's allocations")
	fs.DurationVar(&cfg.Duration, "duration", bench.DefaultDuration, "stream: measured window per trial")
	fs.IntVar(&cfg.MaxK, "max-k", 16, "stream: largest K tried")
	fs.DurationVar(&cfg.SearchBudget, "search-budget", bench.DefaultSearchBudget, "stream: bound on the whole K search")
	fs.DurationVar(&cfg.TickInterval, "tick-interval", bench.DefaultTickInterval, "session tick pacing for start/stream (demond's default)")
	fs.IntVar(&cfg.TickIters, "tick-iters", 100, "tick: measured ticks")
	fs.IntVar(&cfg.Depth, "depth", 4, "pipeline depth")
	fs.IntVar(&cfg.Steps, "steps", 8, "diffusion steps")
	fs.BoolVar(&cfg.NoPlots, "no-plots", false, "skip the PNG plots")
	fs.BoolVar(&quiet, "quiet", false, "no progress bar or log lines")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "demon-bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg.Scenarios = nil
	for _, s := range strings.Split(scenarios, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Scenarios = append(cfg.Scenarios, s)
		}
	}
	cfg.CapacityBytes = uint64(capGiB * (1 << 30))
	if !quiet {
		cfg.Progress, cfg.Log = stderr, stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := bench.Run(ctx, cfg)
	if sum != nil {
		fmt.Fprintf(stdout, "wrote %s/summary.json, %s/summary.md and %d plots\n", cfg.Out, cfg.Out, len(sum.Plots))
	}
	if err != nil {
		fmt.Fprintf(stderr, "demon-bench: %v\n", err)
		return 1
	}
	return 0
}
