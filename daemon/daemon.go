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
// code: 0 after a clean stop, 1 when start-up or stop failed, 2 for a configuration error.
func Main(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if code, ok := subcommand(args, stdout, stderr); ok {
		return code
	}
	cfg, err := LoadConfig(args, getenv, stdout)
	if errors.Is(err, ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "demond: %v\n", err)
		return 2
	}
	log := NewLogger(cfg, stderr)
	app := fx.New(Modules(cfg, log), fx.StartTimeout(cfg.StartTimeout), fx.StopTimeout(cfg.StopTimeout))
	if err := app.Err(); err != nil {
		fmt.Fprintf(stderr, "demond: %v\n", err)
		return 1
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	startCtx, cancel := context.WithTimeout(context.Background(), cfg.StartTimeout)
	err = app.Start(startCtx)
	cancel()
	if err != nil {
		log.Error("start failed", "err", err)
		fmt.Fprintf(stderr, "demond: start failed: %v\n", err)
		return 1
	}
	log.Info("demond started", "device", cfg.Device)

	sig := <-sigs
	log.Info("stopping", "signal", sig.String())
	go func() {
		// A second signal forces exit, for an operator who will not wait for a drain.
		s := <-sigs
		fmt.Fprintf(stderr, "demond: second %s: exiting without a graceful stop\n", s)
		os.Exit(1)
	}()
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.StopTimeout)
	defer cancel()
	if err := app.Stop(stopCtx); err != nil {
		log.Error("stop failed", "err", err)
		return 1
	}
	log.Info("demond stopped")
	return 0
}
