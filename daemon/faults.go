package daemon

import (
	"context"
	"fmt"
	"log/slog"

	"go.uber.org/fx"

	"github.com/demon-audio/demon/trt"
)

// FaultsService owns the process's fault-point registry, armed from --failpoints /
// DEMON_FAILPOINTS. Everything that hits points (the shim through the device, Go-side
// session and protocol code) uses this one registry.
type FaultsService struct {
	spec   string
	log    *slog.Logger
	faults *trt.Faults
}

// FaultsParams are NewFaultsService's dependencies.
type FaultsParams struct {
	fx.In
	Config Config
	Log    *slog.Logger
	LC     fx.Lifecycle
}

// NewFaultsService registers the registry's lifecycle; the registry is created in OnStart.
func NewFaultsService(p FaultsParams) *FaultsService {
	s := &FaultsService{spec: p.Config.Failpoints, log: p.Log}
	p.LC.Append(fx.StartStopHook(s.start, s.stop))
	return s
}

// Faults returns the registry (nil before start).
func (s *FaultsService) Faults() *trt.Faults { return s.faults }

func (s *FaultsService) start(context.Context) error {
	f, err := trt.NewFaults(s.spec)
	if err != nil {
		return fmt.Errorf("--failpoints / DEMON_FAILPOINTS: %w", err)
	}
	s.faults = f
	if s.spec != "" {
		s.log.Warn("fault points armed", "failpoints", s.spec)
	}
	return nil
}

func (s *FaultsService) stop(context.Context) error {
	err := s.faults.Close()
	s.faults = nil
	return err
}

// FaultsModule provides the FaultsService.
var FaultsModule = fx.Module("faults", fx.Provide(NewFaultsService))
