// Package daemon wires demond with fx: one module per concern (config, logging, faults,
// device, ...), each with side-effect-free constructors and OnStart/OnStop hooks that
// clean up their own partial work, so a failed start unwinds through Go and native
// destructors alike.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/fx"
)

// Modules is the production composition for a configuration and logger.
func Modules(cfg Config, log *slog.Logger) fx.Option {
	return fx.Options(
		fx.Supply(cfg),
		LoggingModule(log),
		FaultsModule,
		DeviceModule,
		HealthModule,
		MetricsModule,
		GPUModule,
		SystemdModule,
		ModelsModule,
		SessionsModule,
		WebModule,
		ServerModule,
		ControlModule,
		fx.Invoke(func(*DeviceService, *SessionsService) {}),
		// Must stay the last option: READY=1 is sent by the last OnStart hook, after every
		// module (engines, warmup, listeners) has started; its OnStop sends STOPPING=1
		// first. Root-level invokes run after those of the child modules above.
		fx.Invoke(registerSystemdReady),
	)
}

// Main runs demond with the given arguments and environment and returns the process exit
// code: 0 after a clean stop (a signal during start-up that unwound cleanly included), 1
// when start-up or stop failed, 2 for a configuration error. lookupEnv reads the
// environment (os.LookupEnv in production: a variable set to "" is not an unset one).
func Main(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	if code, ok := subcommand(args, stdout, stderr); ok {
		return code
	}
	cfg, err := LoadConfigFrom(args, lookupEnv, stdout)
	if errors.Is(err, ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "demond: %v\n", err)
		return 2
	}
	log := NewLogger(cfg, stderr)
	gate := newStartGate(cfg.StartTimeout)
	defer gate.close()
	var dev *DeviceService
	app := fx.New(Modules(cfg, log), fx.Decorate(gate.lifecycle), fx.Populate(&dev),
		fx.StartTimeout(cfg.StartTimeout), fx.StopTimeout(cfg.StopTimeout))
	if err := app.Err(); err != nil {
		fmt.Fprintf(stderr, "demond: %v\n", err)
		return 1
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// A second signal forces exit, for an operator who will not wait for a start to unwind
	// or for a drain.
	forceOnSecondSignal := func() {
		go func() {
			s := <-sigs
			logLedgerOwners(log, dev, "second "+signalName(s)+": exiting without a graceful stop")
			fmt.Fprintf(stderr, "demond: second %s: exiting without a graceful stop\n", signalName(s))
			os.Exit(1)
		}()
	}

	// The hooks run under the gate (start deadline, signals); fx rolls a failed start back
	// with the context given to Start, so that one must outlive the gate by the stop timeout.
	rollbackCtx, cancel := context.WithTimeout(context.Background(), cfg.StartTimeout+cfg.StopTimeout)
	defer cancel()
	started := make(chan error, 1)
	gate.open()
	go func() { started <- app.Start(rollbackCtx) }()
	var sig os.Signal
	select {
	case err = <-started:
	case sig = <-sigs:
		log.Info("stopping during start-up", "signal", signalName(sig))
		gate.interrupt(fmt.Errorf("start interrupted by %s", signalName(sig)))
		forceOnSecondSignal()
		err = <-started
	}
	if err != nil {
		unwound := rollbackCtx.Err() == nil
		if !unwound {
			// fx gave up waiting; the hooks may still be running.
			err = fmt.Errorf("%w, and unwinding it did not finish within --stop-timeout %s", context.Cause(gate.ctx), cfg.StopTimeout)
			logLedgerOwners(log, dev, "start-up did not unwind")
		}
		if sig != nil && unwound && !rollbackFailed(err) {
			log.Info("demond stopped during start-up") // as asked, and everything was unwound
			return 0
		}
		// fx's own events are logged at debug level: this line is the one that says why.
		fmt.Fprintf(stderr, "demond: start failed: %v\n", err)
		return 1
	}

	if sig == nil {
		log.Info("demond started", "device", cfg.Device)
		sig = <-sigs
		log.Info("stopping", "signal", signalName(sig))
		forceOnSecondSignal()
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.StopTimeout)
	defer cancel()
	if err := app.Stop(stopCtx); err != nil {
		if stopCtx.Err() != nil {
			logLedgerOwners(log, dev, "stop did not finish within --stop-timeout "+cfg.StopTimeout.String())
		} else {
			log.Error("stop failed", "err", err)
		}
		return 1
	}
	log.Info("demond stopped")
	return 0
}

// signalName is the name an operator sends (SIGTERM), not Go's description (terminated).
func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return s.String()
}

// rollbackFailed reports whether fx's rollback of a failed start added errors of its own
// (fx appends them to the start error).
func rollbackFailed(err error) bool {
	var joined interface{ Unwrap() []error }
	return errors.As(err, &joined) && len(joined.Unwrap()) > 1
}

// logLedgerOwners logs who still holds device memory when demond gives up on a graceful
// stop, so the operator sees what a hung stop was holding.
func logLedgerOwners(log *slog.Logger, dev *DeviceService, why string) {
	d := dev.Device()
	if d == nil {
		log.Error(why + "; the device was already released")
		return
	}
	l, err := d.Ledger()
	if err != nil {
		log.Error(why+"; the device ledger cannot be read", "err", err)
		return
	}
	owners := make([]any, 0, 2*len(l.ByOwner))
	for _, o := range l.ByOwner {
		owners = append(owners, slog.Uint64(o.Name, o.UsedBytes))
	}
	log.Error(why+"; device memory still held", "used_bytes", l.Totals.UsedBytes,
		"live_handles", l.Totals.LiveHandles, slog.Group("owners", owners...))
}
