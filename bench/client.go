package bench

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/demon-audio/demon/session"
)

// Client starts sessions the way a scenario needs them: in-process through the session
// API (SessionClient) or over a WebSocket like the browser (WSClient).
type Client interface {
	// Kind names the path: "in-process session API" or "websocket".
	Kind() string
	// Start connects and runs the start handshake; on success the session is live
	// (streaming may already have begun) and the caller must Close it.
	Start(ctx context.Context) (Live, error)
}

// SliceRecord is one audio slice as the client saw it.
type SliceRecord struct {
	At         time.Time // arrival (client clock)
	StartFrame int64     // window start, frames into the playback buffer
	Frames     int
	TickMs     float32
	DecMs      float32
	NumGens    uint32
}

// Live is a started session.
type Live interface {
	// ConnectAt, ReadyAt and InitialAt are the client-side marks of the start: connect,
	// the ready message, the initial buffer (in-process: ready = initial = Create returned).
	ConnectAt() time.Time
	ReadyAt() time.Time
	InitialAt() time.Time
	// Duration is the playback buffer's length in seconds.
	Duration() float64
	// Stream receives slices until ctx ends, onSlice returns false, or the session ends.
	// Between slices it keeps the server's idea of the playhead current, as the browser's
	// params messages do. It may be called once.
	Stream(ctx context.Context, onSlice func(SliceRecord) bool) error
	// Close ends the session and waits until the server side has released it (as far as
	// the client can tell).
	Close() error
}

// SessionClient drives a session.Manager directly (no sockets).
type SessionClient struct {
	Mgr *session.Manager
	Req func() session.CreateRequest
	// Heartbeat is how often the simulated client reports its playhead (default 100 ms).
	Heartbeat time.Duration
}

// Kind implements Client.
func (c *SessionClient) Kind() string { return "in-process session API" }

// Start implements Client: Create, then Run on its own goroutine.
func (c *SessionClient) Start(ctx context.Context) (Live, error) {
	t0 := time.Now()
	s, err := c.Mgr.Create(ctx, c.Req())
	if err != nil {
		return nil, err
	}
	t1 := time.Now()
	hb := c.Heartbeat
	if hb <= 0 {
		hb = 100 * time.Millisecond
	}
	l := &sessionLive{s: s, t0: t0, t1: t1, hb: hb, slices: make(chan SliceRecord, 1024), done: make(chan struct{})}
	rctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go func() {
		defer close(l.done)
		l.runErr = s.Run(rctx, l)
	}()
	return l, nil
}

type sessionLive struct {
	s      *session.Session
	t0, t1 time.Time
	hb     time.Duration
	cancel context.CancelFunc
	slices chan SliceRecord
	done   chan struct{}
	runErr error
	once   sync.Once
}

func (l *sessionLive) ConnectAt() time.Time { return l.t0 }
func (l *sessionLive) ReadyAt() time.Time   { return l.t1 }
func (l *sessionLive) InitialAt() time.Time { return l.t1 }
func (l *sessionLive) Duration() float64    { return l.s.Info.Duration }

// Slice implements session.Output: it runs on the session's run loop and must not block
// it (a full channel drops the record, as a slow client would lose it).
func (l *sessionLive) Slice(ev *session.SliceEvent) error {
	r := SliceRecord{At: time.Now(), StartFrame: ev.StartSample, Frames: len(ev.Samples) / 2, TickMs: ev.TickMs, DecMs: ev.DecMs, NumGens: ev.NumGens}
	select {
	case l.slices <- r:
	default:
	}
	return nil
}

func (l *sessionLive) Stream(ctx context.Context, onSlice func(SliceRecord) bool) error {
	t := time.NewTicker(l.hb)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.done:
			return l.runErr
		case r := <-l.slices:
			if !onSlice(r) {
				return nil
			}
		case now := <-t.C:
			pos := now.Sub(l.t1).Seconds()
			if d := l.s.Info.Duration; d > 0 {
				pos = mod(pos, d)
			}
			l.s.SetPlayhead(pos)
			l.s.Touch()
		}
	}
}

func (l *sessionLive) Close() error {
	l.once.Do(func() {
		l.s.Stop()
		l.cancel()
	})
	<-l.done
	err := l.s.Close()
	var ri *session.RunnerInitError
	if errors.As(l.runErr, &ri) {
		return l.runErr
	}
	return err
}

func mod(a, b float64) float64 {
	r := a - b*float64(int64(a/b))
	if r < 0 {
		r += b
	}
	return r
}
