package bench

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// StartSample is one session start, in ms from connect (in-process session API:
// from Create).
type StartSample struct {
	ReadyMs      float64 `json:"ready_ms"`
	InitialMs    float64 `json:"initial_buffer_ms"`
	FirstSliceMs float64 `json:"first_slice_ms"`
	CloseMs      float64 `json:"close_ms"`
}

// StartPath is the start scenario over one client path.
type StartPath struct {
	Path     string `json:"path"`
	Sessions int    `json:"sessions"`
	Errors   int    `json:"errors"`
	// First is the first session this path ran after the model load (not warm).
	First        *StartSample  `json:"first_after_load,omitempty"`
	ReadyMs      Dist          `json:"ready_ms"`
	InitialMs    Dist          `json:"initial_buffer_ms"`
	FirstSliceMs Dist          `json:"first_slice_ms"`
	CloseMs      Dist          `json:"close_ms"`
	Samples      []StartSample `json:"samples"`
}

// StartResult is the start scenario.
type StartResult struct {
	Paths []StartPath `json:"paths"`
}

// clients returns the client paths of a run: the remote target, or in-process the
// WebSocket stack and the session API (each on its own manager). cleanup releases them.
func clients(cfg Config, env *Env, remote Client, tick time.Duration) (out []Client, cleanup func(), err error) {
	if remote != nil {
		return []Client{remote}, func() {}, nil
	}
	st, err := newWSStack(env, env.NewManager(SessionConfig(tick), sessionHooks{}.hooks()), cfg)
	if err != nil {
		return nil, nil, err
	}
	api := &SessionClient{Mgr: env.NewManager(SessionConfig(tick), sessionHooks{}.hooks()), Req: env.Request}
	return []Client{st, api}, st.Close, nil
}

func runStart(ctx context.Context, cfg Config, env *Env, remote Client) (*StartResult, error) {
	cs, cleanup, err := clients(cfg, env, remote, cfg.TickInterval)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	res := &StartResult{}
	var errs []error
	for _, c := range cs {
		p := StartPath{Path: c.Kind()}
		bar := newProgress(cfg.Progress, "start", cfg.WarmSessions+cfg.Sessions)
		for i := range cfg.WarmSessions + cfg.Sessions {
			if ctx.Err() != nil {
				break
			}
			s, err := oneStart(ctx, c)
			bar.Set(i + 1)
			if err != nil {
				p.Errors++
				errs = append(errs, fmt.Errorf("%s: %w", c.Kind(), err))
				continue
			}
			if i == 0 {
				p.First = &s
			}
			if i >= cfg.WarmSessions {
				p.Samples = append(p.Samples, s)
			}
		}
		bar.Done()
		p.Sessions = len(p.Samples)
		col := func(f func(StartSample) float64) Dist {
			v := make([]float64, len(p.Samples))
			for i, s := range p.Samples {
				v[i] = f(s)
			}
			return Summarize(v)
		}
		p.ReadyMs = col(func(s StartSample) float64 { return s.ReadyMs })
		p.InitialMs = col(func(s StartSample) float64 { return s.InitialMs })
		p.FirstSliceMs = col(func(s StartSample) float64 { return s.FirstSliceMs })
		p.CloseMs = col(func(s StartSample) float64 { return s.CloseMs })
		res.Paths = append(res.Paths, p)
	}
	return res, errors.Join(errs...)
}

// oneStart starts a session, waits for its first slice and closes it.
func oneStart(ctx context.Context, c Client) (StartSample, error) {
	l, err := c.Start(ctx)
	if err != nil {
		return StartSample{}, err
	}
	t0 := l.ConnectAt()
	s := StartSample{
		ReadyMs:   msSince(t0, l.ReadyAt()),
		InitialMs: msSince(t0, l.InitialAt()),
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	var first time.Time
	err = l.Stream(sctx, func(r SliceRecord) bool { first = r.At; return false })
	cancel()
	tc := time.Now()
	cerr := l.Close()
	s.CloseMs = msSince(tc, time.Now())
	if err != nil {
		return s, err
	}
	if first.IsZero() {
		return s, errors.New("no slice within 2 minutes")
	}
	s.FirstSliceMs = msSince(t0, first)
	return s, cerr
}

func msSince(a, b time.Time) float64 { return float64(b.Sub(a)) / float64(time.Millisecond) }
