package daemon

// systemd integration (Type=notify, deploy/demond.service) over sd_notify. Every message
// is a no-op when NOTIFY_SOCKET is unset, so demond behaves the same outside systemd.
//
//   - READY=1 is sent by the last OnStart hook of the app: Modules registers it through
//     a root-level fx.Invoke placed last, and fx runs the invokes of child modules first,
//     so every module's OnStart (device, listeners, and later engine loads and warmup)
//     has returned before it runs. A module whose start-up work continues after its
//     OnStart returned (an asynchronous warmup) takes a HoldReady in OnStart and releases
//     it when done; READY waits for every hold (bounded by the start timeout).
//   - STATUS= says what the daemon is doing: start phases (Status, Extending), readiness
//     changes (which /readyz conditions fail), watchdog trouble, stopping.
//   - EXTEND_TIMEOUT_USEC: a start hook that may outlast TimeoutStartSec (engine loads)
//     wraps its work in Extending, which keeps pushing systemd's deadline while it runs.
//   - WATCHDOG=1 every WatchdogSec/2 from READY on, but only while Liveness.Check passes:
//     a hung tick loop stops the pings, systemd kills and restarts demond.
//   - STOPPING=1 first thing in stop: the ready hook is the last registered, so its OnStop
//     is the first to run.

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/fx"
)

// Systemd sends sd_notify messages to the service manager. Its methods are safe for
// concurrent use and do nothing when demond does not run under systemd.
type Systemd struct {
	log   *slog.Logger
	live  *Liveness
	ready *Readiness

	// notify sends one state message; watchdogInterval returns systemd's WatchdogSec
	// (0 when the watchdog is off). Replaced by tests.
	notify           func(state string) (bool, error)
	watchdogInterval func() (time.Duration, error)

	mu       sync.Mutex
	holds    map[*readyHold]struct{}
	released chan struct{} // closed and replaced whenever a hold is released
	warned   bool          // a notify error was logged
	stopWD   chan struct{}
	wdDone   chan struct{}
}

type readyHold struct{ name string }

// SystemdParams are NewSystemd's dependencies.
type SystemdParams struct {
	fx.In
	Log       *slog.Logger
	Liveness  *Liveness
	Readiness *Readiness
}

// NewSystemd returns the notifier. It registers no hooks: Modules adds the READY/STOPPING
// hook last (see the file comment). It reports readiness changes as STATUS lines.
func NewSystemd(p SystemdParams) *Systemd {
	s := &Systemd{
		log: p.Log, live: p.Liveness, ready: p.Readiness,
		notify:           func(state string) (bool, error) { return sddaemon.SdNotify(false, state) },
		watchdogInterval: func() (time.Duration, error) { return sddaemon.SdWatchdogEnabled(false) },
		holds:            map[*readyHold]struct{}{},
		released:         make(chan struct{}),
	}
	p.Readiness.OnChange(func(st ReadinessStatus) {
		if st.Ready {
			s.Status("ready")
		} else {
			s.Status("not ready: " + strings.Join(st.Failing, ", "))
		}
	})
	return s
}

func (s *Systemd) send(state string) {
	if _, err := s.notify(state); err != nil {
		s.mu.Lock()
		first := !s.warned
		s.warned = true
		s.mu.Unlock()
		if first {
			s.log.Warn("sd_notify failed (further failures not logged)", "err", err)
		}
	}
}

// Status sends STATUS=msg (shown by systemctl status). Newlines are replaced by spaces.
func (s *Systemd) Status(msg string) {
	s.send("STATUS=" + strings.ReplaceAll(msg, "\n", " "))
}

// ExtendTimeout asks systemd to extend the current start (or stop) timeout so that it
// ends d from now at the earliest. Call it again before d passes to keep extending.
func (s *Systemd) ExtendTimeout(d time.Duration) {
	s.send("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(d.Microseconds(), 10))
}

// Extending reports what as the STATUS and keeps systemd's timeout at least step ahead
// (EXTEND_TIMEOUT_USEC, renewed every step/2) until done is called or ctx ends. A start
// hook wraps long work in it:
//
//	done := sd.Extending(ctx, "loading engines", time.Minute)
//	defer done()
//
// done waits for the renewing goroutine to exit and may be called more than once.
func (s *Systemd) Extending(ctx context.Context, what string, step time.Duration) (done func()) {
	s.Status(what)
	s.ExtendTimeout(step)
	stop, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(step / 2)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.ExtendTimeout(step)
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(stop) })
		<-exited
	}
}

// HoldReady delays READY=1 until release is called, for start-up work that continues
// after its module's OnStart returned (e.g. an asynchronous warmup). Take it in OnStart
// (or earlier); release it whether the work succeeded or failed. release is idempotent.
func (s *Systemd) HoldReady(name string) (release func()) {
	h := &readyHold{name: name}
	s.mu.Lock()
	s.holds[h] = struct{}{}
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.holds, h)
			close(s.released)
			s.released = make(chan struct{})
			s.mu.Unlock()
		})
	}
}

// pendingHolds returns the names of the holds not yet released and a channel closed at
// the next release.
func (s *Systemd) pendingHolds() ([]string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.holds))
	for h := range s.holds {
		names = append(names, h.name)
	}
	slices.Sort(names)
	return names, s.released
}

// start is the app's last OnStart: wait for the holds, send READY=1, start the watchdog.
func (s *Systemd) start(ctx context.Context) error {
	for {
		names, next := s.pendingHolds()
		if len(names) == 0 {
			break
		}
		s.Status("waiting for " + strings.Join(names, ", "))
		select {
		case <-next:
		case <-ctx.Done():
			return fmt.Errorf("start-up still waiting for %s: %w", strings.Join(names, ", "), ctx.Err())
		}
	}
	st := s.ready.Status()
	if st.Ready {
		s.send("READY=1\nSTATUS=ready")
	} else {
		s.send("READY=1\nSTATUS=started; not ready: " + strings.Join(st.Failing, ", "))
	}
	iv, err := s.watchdogInterval()
	if err != nil {
		s.log.Warn("systemd watchdog settings unreadable; not pinging", "err", err)
		return nil
	}
	if iv <= 0 {
		return nil
	}
	stop, done := make(chan struct{}), make(chan struct{})
	s.mu.Lock()
	s.stopWD, s.wdDone = stop, done
	s.mu.Unlock()
	go s.watchdog(iv/2, stop, done)
	s.log.Info("systemd watchdog on", "timeout", iv, "ping_every", iv/2)
	return nil
}

// watchdog pings every period while every registered loop beats. A failed check is
// logged (and put in STATUS) once per episode.
func (s *Systemd) watchdog(period time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(period)
	defer t.Stop()
	failing := false
	for {
		if err := s.live.Check(); err != nil {
			if !failing {
				s.log.Error("watchdog: withholding pings, systemd will restart demond if this persists", "err", err)
				s.Status("watchdog: " + err.Error())
				failing = true
			}
		} else {
			if failing {
				s.log.Info("watchdog: loops beating again; pings resumed")
				s.Status("running")
				failing = false
			}
			s.send(sddaemon.SdNotifyWatchdog)
		}
		select {
		case <-t.C:
		case <-stop:
			return
		}
	}
}

// stop is the app's first OnStop: STOPPING=1, then stop the watchdog pings.
func (s *Systemd) stop(context.Context) error {
	s.send(sddaemon.SdNotifyStopping + "\nSTATUS=stopping")
	s.mu.Lock()
	stop, done := s.stopWD, s.wdDone
	s.stopWD, s.wdDone = nil, nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	return nil
}

// registerSystemdReady appends the READY/STOPPING hook. Modules invokes it last.
func registerSystemdReady(s *Systemd, lc fx.Lifecycle) {
	lc.Append(fx.StartStopHook(s.start, s.stop))
}

// SystemdModule provides the Systemd notifier. The READY hook itself is registered by
// Modules, last (see the file comment).
var SystemdModule = fx.Module("systemd", fx.Provide(NewSystemd))
