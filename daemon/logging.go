package daemon

import (
	"io"
	"log/slog"

	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"
)

// NewLogger builds the process logger from the configuration.
func NewLogger(cfg Config, out io.Writer) *slog.Logger {
	level := map[string]slog.Level{
		"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
	}[cfg.LogLevel]
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}

// LoggingModule provides the *slog.Logger and routes fx's own events through it at debug
// level, errors included: a failed start is reported once, by Main, and fx would otherwise
// log the same cause three more times (the failed hook, the rollback, the failed start). fx.WithLogger must sit at the top level of the app
// (inside a module it would only apply to that module), so this is a plain option set.
func LoggingModule(log *slog.Logger) fx.Option {
	return fx.Options(
		fx.Supply(log),
		fx.WithLogger(func() fxevent.Logger {
			l := &fxevent.SlogLogger{Logger: log}
			l.UseLogLevel(slog.LevelDebug)
			l.UseErrorLevel(slog.LevelDebug)
			return l
		}),
	)
}
