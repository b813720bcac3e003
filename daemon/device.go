package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"go.uber.org/fx"

	"github.com/demon-audio/demon/trt"
)

// DeviceService owns the native device every engine, context and buffer lives on.
// It is created in OnStart and freed in OnStop, after the modules that use it have
// stopped (fx stops in reverse order), and it logs the ledger on the way out so a
// leak is visible in the log of every shutdown.
type DeviceService struct {
	cfg    Config
	log    *slog.Logger
	faults *FaultsService
	// dev is atomic because Main reads the ledger from its own goroutine when a stop
	// times out, while the stop hooks may still be running.
	dev atomic.Pointer[trt.Device]
}

// DeviceParams are NewDeviceService's dependencies.
type DeviceParams struct {
	fx.In
	Config Config
	Log    *slog.Logger
	Faults *FaultsService
	LC     fx.Lifecycle
}

// NewDeviceService registers the device's lifecycle; nothing is allocated here.
func NewDeviceService(p DeviceParams) *DeviceService {
	s := &DeviceService{cfg: p.Config, log: p.Log, faults: p.Faults}
	p.LC.Append(fx.StartStopHook(s.start, s.stop))
	return s
}

// Device returns the device (nil before start and after stop).
func (s *DeviceService) Device() *trt.Device { return s.dev.Load() }

func (s *DeviceService) start(context.Context) error {
	kind, err := trt.ParseDeviceKind(s.cfg.Device)
	if err != nil {
		return fmt.Errorf("--device: %w", err)
	}
	dev, err := trt.NewDevice(trt.DeviceOptions{
		Kind:          kind,
		CapacityBytes: uint64(s.cfg.DeviceCapacity),
		Ordinal:       s.cfg.DeviceOrdinal,
		Faults:        s.faults.Faults(),
	})
	if err != nil {
		return fmt.Errorf("create %s device: %w", kind, err)
	}
	s.dev.Store(dev)
	s.log.Info("device ready", "device", dev.String())
	return nil
}

func (s *DeviceService) stop(context.Context) error {
	dev := s.dev.Load()
	if dev == nil {
		return nil
	}
	if l, err := dev.Ledger(); err == nil {
		attrs := []any{"used_bytes", l.Totals.UsedBytes, "peak_bytes", l.Totals.PeakBytes, "live_handles", l.Totals.LiveHandles}
		if l.Totals.UsedBytes != 0 || l.Totals.LiveHandles != 0 {
			s.log.Error("device ledger not empty at shutdown: native memory leaked", append(attrs, "owners", l.ByOwner)...)
		} else {
			s.log.Info("device released; ledger at zero", attrs...)
		}
	}
	s.dev.Store(nil)
	return dev.Close()
}

// DeviceModule provides the DeviceService.
var DeviceModule = fx.Module("device", fx.Provide(NewDeviceService))
