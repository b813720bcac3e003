package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/ws"
)

// LatePoint is one slice on the lateness-over-time plot.
type LatePoint struct {
	T          float64 `json:"t_s"`         // since the measured window opened
	LatenessMs float64 `json:"lateness_ms"` // > 0: the playhead had passed the window start
}

// StreamSession is one session of a stream trial.
type StreamSession struct {
	Slices     int         `json:"slices"`
	SliceRate  float64     `json:"slices_per_s"`
	Late       int         `json:"late"`
	Underruns  int         `json:"underruns"`
	StaleS     float64     `json:"stale_s"`           // audio the playhead reached with no fresh slice
	FreshRatio float64     `json:"fresh_audio_ratio"` // slice seconds generated per wall second
	LateFrac   float64     `json:"late_fraction"`
	LatenessMs Dist        `json:"lateness_ms"`
	TickMs     Dist        `json:"tick_ms"` // from the slices' tick_ms (ticks that decoded)
	DecMs      Dist        `json:"dec_ms"`
	Series     []LatePoint `json:"series"`
	// EndedEarly: the session's stream ended before the measured window closed (the
	// server closed it, or it failed).
	EndedEarly bool `json:"ended_early"`
}

// StreamTrial is K sessions streaming together for the measured window.
type StreamTrial struct {
	K              int             `json:"k"`
	WindowS        float64         `json:"window_s"`
	Holds          bool            `json:"holds_real_time"` // see StreamResult.Criterion
	HoldsPace      bool            `json:"holds_pace"`      // and the run loops keep ≥ 90% of the tick pace
	Reason         string          `json:"reason,omitempty"`
	StartErrors    int             `json:"start_errors"`
	Slices         int             `json:"slices"`
	Late           int             `json:"late"`
	Underruns      int             `json:"underruns"`
	StaleS         float64         `json:"stale_s"`
	SliceRate      float64         `json:"slices_per_s_per_session"`
	LatenessMs     Dist            `json:"lateness_ms"`
	TickMs         Dist            `json:"tick_ms"` // every tick of every session (run-loop hook)
	DecMs          Dist            `json:"dec_ms"`
	TicksPerS      float64         `json:"ticks_per_s_per_session"`
	CPUPerSessionS float64         `json:"cpu_s_per_session"`
	CPUPerSession  float64         `json:"cpu_core_fraction_per_session"`
	StartS         float64         `json:"start_all_s"`
	Sessions       []StreamSession `json:"sessions"`
}

// StreamResult is the stream scenario with its search for the largest real-time K.
type StreamResult struct {
	Path         string        `json:"path"`
	Criterion    string        `json:"criterion"`
	ExpectedRate float64       `json:"expected_slices_per_s"`  // what the configured tick pace produces
	RealTimeRate float64       `json:"real_time_slices_per_s"` // what fresh audio at 1 s/s needs
	CPUSource    string        `json:"cpu_source"`
	Trials       []StreamTrial `json:"trials"`
	MaxK         int           `json:"max_real_time_k"`
	MaxKPace     int           `json:"max_k_holding_pace"` // among the trials run
	FirstFailK   int           `json:"first_failing_k"`
	Bounded      bool          `json:"search_bounded"` // budget or --max-k stopped the search early
	SearchS      float64       `json:"search_s"`
}

const (
	lateFracLimit = 0.01
	rateFrac      = 0.9
)

func runStream(ctx context.Context, cfg Config, env *Env, remote Client) (*StreamResult, error) {
	res := &StreamResult{ExpectedRate: expectedRate(cfg), RealTimeRate: 1 / SliceSeconds}
	res.Criterion = fmt.Sprintf("every session started and streamed to the end of the window (none closed by the server); per session "+
		"fresh audio ≥ 1 s per wall second (slices/s ≥ %.0f%% of the real-time need, %.2f/s of %.2f s slices), "+
		"late slices ≤ %.0f%% and no underrun (coverage gap); slices come in bursts of depth every steps ticks, so windows of a few seconds or less read low. "+
		"Reported apart: whether the sessions also keep ≥ %.0f%% of the configured pace: %.2f slices/s (depth %d / (%d steps × %.0f ms tick)) and, in-process, %.0f ticks/s",
		100*rateFrac, res.RealTimeRate, SliceSeconds, 100*lateFracLimit,
		100*rateFrac, res.ExpectedRate, cfg.Depth, cfg.Steps, 1000*cfg.TickInterval.Seconds(), 1/max(cfg.TickInterval.Seconds(), 1e-3))
	t0 := time.Now()
	deadline := t0.Add(cfg.SearchBudget)
	startEst := 2 * time.Second
	lastPass, firstFail := 0, 0
	k := 1
	var errs []error
	for k >= 1 && k <= cfg.MaxK && ctx.Err() == nil {
		est := cfg.Duration + time.Duration(k)*startEst + time.Second
		if len(res.Trials) > 0 && time.Now().Add(est).After(deadline) {
			res.Bounded = true
			break
		}
		tr, err := streamTrial(ctx, cfg, env, remote, k)
		if err != nil {
			errs = append(errs, err)
			break
		}
		if tr.K > 0 && tr.StartS > 0 {
			startEst = time.Duration(tr.StartS / float64(tr.K) * float64(time.Second))
		}
		res.Trials = append(res.Trials, *tr)
		if tr.Holds {
			lastPass = k
		} else {
			firstFail = k
		}
		next := 0
		switch {
		case firstFail == 0:
			next = min(2*k, cfg.MaxK)
			if next == k {
				res.Bounded = true
			}
		default:
			next = (lastPass + firstFail) / 2
		}
		if next <= lastPass || (firstFail > 0 && next >= firstFail) || next == k {
			break
		}
		k = next
	}
	res.MaxK, res.FirstFailK = lastPass, firstFail
	for _, t := range res.Trials {
		if t.HoldsPace && t.K > res.MaxKPace {
			res.MaxKPace = t.K
		}
	}
	res.SearchS = time.Since(t0).Seconds()
	if env == nil {
		res.Path = remote.Kind()
		res.CPUSource = "target /metrics process_cpu_seconds_total (demond only)"
	} else {
		res.Path = "websocket (in-process ws.Server on loopback)"
		res.CPUSource = "getrusage(RUSAGE_SELF) of this process: server and the simulated clients together"
	}
	return res, errors.Join(errs...)
}

// streamTrial runs K concurrent sessions.
func streamTrial(ctx context.Context, cfg Config, env *Env, remote Client, k int) (*StreamTrial, error) {
	tl := &tickLog{}
	var c Client = remote
	var cpu func() time.Duration
	if env != nil {
		st, err := newWSStack(env, env.NewManager(SessionConfig(cfg.TickInterval), sessionHooks{ticks: tl}.hooks()), cfg)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		c = st
		cpu = cpuTime
	} else {
		cpu = remoteCPU(ctx, cfg)
	}
	tr := &StreamTrial{K: k}
	bar := newProgress(cfg.Progress, fmt.Sprintf("K=%d", k), int(cfg.Duration/time.Second)+k)
	defer bar.Done()
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type run struct {
		l     Live
		recs  []SliceRecord
		err   error
		early bool // the stream ended before the trial cancelled it
	}
	runs := make([]*run, 0, k)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range k {
		l, err := c.Start(ctx)
		bar.Set(i + 1)
		if err != nil {
			tr.StartErrors++
			continue
		}
		r := &run{l: l}
		runs = append(runs, r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.err = l.Stream(tctx, func(s SliceRecord) bool { r.recs = append(r.recs, s); return true })
			r.early = tctx.Err() == nil
		}()
	}
	tr.StartS = time.Since(t0).Seconds()
	tw := time.Now()
	tl.record(true)
	cpu0 := cpu()
	end := tw.Add(cfg.Duration)
	for time.Now().Before(end) && ctx.Err() == nil {
		time.Sleep(min(250*time.Millisecond, time.Until(end)))
		bar.Set(k + int(time.Since(tw)/time.Second))
	}
	cpu1 := cpu()
	tl.record(false)
	window := time.Since(tw)
	cancel()
	wg.Wait()
	var cw sync.WaitGroup
	for _, r := range runs {
		cw.Add(1)
		go func() { defer cw.Done(); _ = r.l.Close() }()
	}
	cw.Wait()

	tr.WindowS = window.Seconds()
	var allLate []float64
	reasons := map[string]bool{}
	if tr.StartErrors > 0 {
		reasons[fmt.Sprintf("%d of %d sessions failed to start", tr.StartErrors, k)] = true
	}
	need, paced := 1/SliceSeconds, expectedRate(cfg)
	paceOK := true
	for _, r := range runs {
		ss := analyse(r.recs, r.l, tw, window)
		ss.EndedEarly = r.early
		if r.err != nil {
			reasons["a session ended: "+r.err.Error()] = true
		} else if r.early {
			reasons["a session was closed by the server before the window closed"] = true
		}
		switch {
		case ss.Slices == 0:
			reasons["a session delivered no slice in the window"] = true
		case ss.SliceRate < rateFrac*need:
			reasons[fmt.Sprintf("slices/s below %.0f%% of the real-time need (%.2f/s)", 100*rateFrac, need)] = true
		}
		if paced > 0 && ss.SliceRate < rateFrac*paced {
			paceOK = false
		}
		if ss.FreshRatio < 1 {
			reasons["fresh audio below 1 s per wall second"] = true
		}
		tr.Slices += ss.Slices
		tr.Late += ss.Late
		tr.Underruns += ss.Underruns
		tr.StaleS += ss.StaleS
		for _, p := range ss.Series {
			allLate = append(allLate, p.LatenessMs)
		}
		if ss.LateFrac > lateFracLimit {
			reasons[fmt.Sprintf("late slices above %.0f%%", 100*lateFracLimit)] = true
		}
		if ss.Underruns > 0 {
			reasons["underruns"] = true
		}
		tr.Sessions = append(tr.Sessions, ss)
	}
	if len(runs) > 0 {
		tr.SliceRate = float64(tr.Slices) / float64(len(runs)) / window.Seconds()
		cpuS := (cpu1 - cpu0).Seconds()
		tr.CPUPerSessionS = cpuS / float64(len(runs))
		tr.CPUPerSession = tr.CPUPerSessionS / window.Seconds()
	}
	tr.LatenessMs = Summarize(allLate)
	ticks, decs := tl.snapshot()
	tr.TickMs, tr.DecMs = Summarize(ticks), Summarize(decs)
	if len(runs) > 0 {
		tr.TicksPerS = float64(len(ticks)) / float64(len(runs)) / window.Seconds()
	}
	ticksOK := env == nil || cfg.TickInterval <= 0 || tr.TicksPerS >= rateFrac/cfg.TickInterval.Seconds()
	tr.Holds = len(reasons) == 0 && len(runs) == k
	tr.HoldsPace = tr.Holds && paceOK && ticksOK
	if !paceOK {
		reasons[fmt.Sprintf("(pace: %.2f slices/s < %.0f%% of %.2f/s)", tr.SliceRate, 100*rateFrac, paced)] = true
	}
	if !ticksOK {
		reasons[fmt.Sprintf("(pace: %.1f ticks/s < %.0f%% of %.0f/s)", tr.TicksPerS, 100*rateFrac, 1/cfg.TickInterval.Seconds())] = true
	}
	for r := range reasons {
		if tr.Reason != "" {
			tr.Reason += "; "
		}
		tr.Reason += r
	}
	return tr, nil
}

// SliceSeconds is the audio a slice carries: the bench's sessions ask for vae_window 0.36 s
// (9 latent frames), DEMON's default.
const SliceSeconds = 0.36

// expectedRate is the slices per second a session makes at the configured tick pace.
func expectedRate(cfg Config) float64 {
	if cfg.TickInterval <= 0 {
		return 0
	}
	return float64(cfg.Depth) / (float64(cfg.Steps) * cfg.TickInterval.Seconds())
}

// analyse computes one session's lateness against the client's playhead (wall-clock time
// since playback began with the initial buffer, looping over the track) and its coverage:
// consecutive slices should leave no part of the track between them unpatched, since the
// next slice targets the playhead again and a skipped stretch plays stale (an underrun
// of fresh audio; the client itself never runs dry, it loops the buffer).
func analyse(recs []SliceRecord, l Live, tw time.Time, window time.Duration) StreamSession {
	ss := StreamSession{}
	L := l.Duration()
	trackFrames := int(math.Round(L * models.SampleRate))
	play := l.InitialAt()
	var late, ticks, decs []float64
	var prev *SliceRecord
	var audioS float64
	for i := range recs {
		r := &recs[i]
		if r.At.Before(tw) || r.At.After(tw.Add(window)) {
			continue
		}
		ss.Slices++
		sliceS := float64(r.Frames) / models.SampleRate
		audioS += sliceS
		s := float64(r.StartFrame) / models.SampleRate
		p := r.At.Sub(play).Seconds()
		lat := p - s
		if L > 0 {
			lat = math.Remainder(p-s, L) // in [−L/2, L/2]
		}
		lms := lat * 1000
		late = append(late, lms)
		if lat > 0 {
			ss.Late++
		}
		if prev != nil {
			if gap := ws.StaleGap(int(prev.StartFrame), prev.Frames, int(r.StartFrame), trackFrames); gap > 0 {
				ss.Underruns++
				ss.StaleS += float64(gap) / models.SampleRate
			}
		}
		prev = r
		ss.Series = append(ss.Series, LatePoint{T: r.At.Sub(tw).Seconds(), LatenessMs: lms})
		ticks = append(ticks, float64(r.TickMs))
		decs = append(decs, float64(r.DecMs))
	}
	ss.SliceRate = float64(ss.Slices) / window.Seconds()
	ss.FreshRatio = audioS / window.Seconds()
	if ss.Slices > 0 {
		ss.LateFrac = float64(ss.Late) / float64(ss.Slices)
	}
	ss.LatenessMs, ss.TickMs, ss.DecMs = Summarize(late), Summarize(ticks), Summarize(decs)
	return ss
}

// remoteCPU reads demond's CPU seconds from its /metrics.
func remoteCPU(ctx context.Context, cfg Config) func() time.Duration {
	base, err := httpBase(cfg.Target)
	if err != nil {
		return func() time.Duration { return 0 }
	}
	r := &remoteTarget{base: base, http: defaultHTTP()}
	return func() time.Duration {
		m, err := r.scrape(ctx)
		if err != nil {
			return 0
		}
		return time.Duration(m["process_cpu_seconds_total"] * float64(time.Second))
	}
}
