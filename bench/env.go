package bench

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/demon-audio/demon/audio"
	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt"
)

// Env is the in-process stack a scenario drives: a reference model repository built in a
// temporary directory, a device (host with a GPU-like capacity, or a real GPU with
// --device cuda), the loaded model and a fault registry. Scenarios make their own
// session.Manager on it (NewManager).
type Env struct {
	Dir     string
	Spec    models.ProfileSpec
	Repo    *models.Repository
	Profile models.Profile
	Faults  *trt.Faults
	Dev     *trt.Device
	Model   *models.Model
	// Fixture and PCM are the source every session starts from (a demo track).
	Fixture string
	PCM     []float32
	// BuildTime and LoadTime are the one-time costs (repository build, model load).
	BuildTime, LoadTime time.Duration
	Log                 *slog.Logger
}

// NewEnv builds the in-process stack for cfg.
func NewEnv(cfg Config) (*Env, error) {
	e := &Env{Spec: models.ProfileSpec{Name: cfg.ProfileName(), DurationS: cfg.ProfileSeconds, DecoderVariant: cfg.Decoder}, Log: slog.New(slog.DiscardHandler)}
	var err error
	if e.Dir, err = os.MkdirTemp("", "demon-bench-repo-"); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			e.Close()
		}
	}()
	fp := models.FootprintsRealistic
	if cfg.ActualFootprints {
		fp = models.FootprintsActual
	}
	t0 := time.Now()
	if e.Repo, err = models.BuildReference(e.Dir, models.BuildOptions{Profiles: []models.ProfileSpec{e.Spec}, Footprints: fp}); err != nil {
		return nil, fmt.Errorf("build reference repository: %w", err)
	}
	e.BuildTime = time.Since(t0)
	if e.Profile, err = e.Repo.Profile(e.Spec.Name); err != nil {
		return nil, err
	}
	if e.Faults, err = trt.NewFaults(""); err != nil {
		return nil, err
	}
	kind, err := trt.ParseDeviceKind(cfg.Device)
	if err != nil {
		return nil, err
	}
	// CapacityBytes sizes the host device only; a cuda device's capacity is the GPU's memory.
	if e.Dev, err = trt.NewDevice(trt.DeviceOptions{Kind: kind, CapacityBytes: cfg.CapacityBytes, Ordinal: cfg.DeviceOrdinal, Faults: e.Faults}); err != nil {
		return nil, fmt.Errorf("create %s device: %w", kind, err)
	}
	t0 = time.Now()
	if e.Model, err = models.LoadModel(e.Dev, e.Repo, e.Profile, models.LoadOptions{}); err != nil {
		return nil, err
	}
	e.LoadTime = time.Since(t0)
	e.Faults.Reset() // points count from here: the model load is not part of any session
	e.Fixture = cfg.Fixture
	if e.Fixture == "" {
		e.Fixture = demoFor(cfg.ProfileSeconds)
	}
	if e.PCM, err = audio.SynthesizeDemo(e.Fixture); err != nil {
		return nil, err
	}
	ok = true
	return e, nil
}

// demoFor picks the shortest demo track at least seconds long (the longest otherwise);
// sessions crop it to the profile.
func demoFor(seconds int) string {
	best, bestS := "", 0
	for _, name := range audio.Catalogue() {
		var s int
		if _, err := fmt.Sscanf(trackSeconds(name), "%d", &s); err != nil {
			continue
		}
		switch {
		case best == "",
			s >= seconds && (bestS < seconds || s < bestS),
			bestS < seconds && s > bestS:
			best, bestS = name, s
		}
	}
	return best
}

// trackSeconds extracts "60" from "demo_pulse_Gm_60s.wav".
func trackSeconds(name string) string {
	end := len(name) - len("s.wav")
	if end <= 0 {
		return ""
	}
	i := end
	for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
		i--
	}
	return name[i:end]
}

// SessionConfig is the session configuration scenarios start from (demond's defaults).
func SessionConfig(tick time.Duration) session.Config {
	c := session.DefaultConfig()
	c.TickInterval = tick
	return c
}

// NewManager makes a manager on the environment's device and model.
func (e *Env) NewManager(cfg session.Config, hooks session.Hooks) *session.Manager {
	return session.NewManager(cfg, e.Dev, e.Model, e.Faults, e.Log, hooks)
}

// Request is the CreateRequest every benchmark session uses.
func (e *Env) Request() session.CreateRequest {
	return session.CreateRequest{PCM: e.PCM, Channels: 2, FixtureName: e.Fixture,
		Prompt: "ambient electronic, warm pads", PromptB: "dark techno", Depth: 4}
}

// Ledger is the device's totals plus the package-wide handle count.
type Ledger struct {
	UsedBytes     uint64 `json:"used_bytes"`
	DeviceHandles int64  `json:"device_handles"`
	GoHandles     int64  `json:"go_handles"`
}

// Ledger reads the current accounting.
func (e *Env) Ledger() Ledger {
	t, err := e.Dev.Totals()
	if err != nil {
		return Ledger{}
	}
	return Ledger{UsedBytes: t.UsedBytes, DeviceHandles: t.LiveHandles, GoHandles: trt.LiveHandles()}
}

// Close frees everything in reverse order and removes the repository.
func (e *Env) Close() {
	if e.Model != nil {
		e.Model.Release()
	}
	if e.Dev != nil {
		_ = e.Dev.Close()
	}
	if e.Faults != nil {
		_ = e.Faults.Close()
	}
	if e.Dir != "" {
		_ = os.RemoveAll(e.Dir)
	}
}
