package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"go.uber.org/fx"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
)

// ModelsService loads the model repository's profile onto the device in OnStart (with
// progress in the log and systemd's start timeout extended while engines load) and
// releases it in OnStop. A load that fails part-way has already released what it loaded.
type ModelsService struct {
	cfg    Config
	log    *slog.Logger
	dev    *DeviceService
	sd     *Systemd
	ready  *Readiness
	model  *models.Model
	loaded *Condition
}

// ModelsParams are NewModelsService's dependencies.
type ModelsParams struct {
	fx.In
	Config    Config
	Log       *slog.Logger
	Device    *DeviceService
	Systemd   *Systemd
	Readiness *Readiness
	LC        fx.Lifecycle
}

// NewModelsService registers the model's lifecycle; nothing is read or loaded here.
func NewModelsService(p ModelsParams) *ModelsService {
	s := &ModelsService{cfg: p.Config, log: p.Log, dev: p.Device, sd: p.Systemd, ready: p.Readiness}
	s.loaded = p.Readiness.Condition(CondModelsLoaded)
	p.LC.Append(fx.StartStopHook(s.start, s.stop))
	return s
}

// Model returns the loaded model (nil before start).
func (s *ModelsService) Model() *models.Model { return s.model }

// BuiltinRepository is where demond keeps its reference repository under dataDir.
func BuiltinRepository(dataDir string) string {
	return filepath.Join(dataDir, "models", "reference-"+trt.Version())
}

// builtinProfiles are the profiles of the built-in reference repository.
var builtinProfiles = []models.ProfileSpec{
	models.DefaultProfile,
	{Name: "ref-20s", DurationS: 20, DecoderVariant: "tiny-dit"},
	{Name: "oracle-60s", DurationS: 60, DecoderVariant: "oracle"},
}

func (s *ModelsService) start(ctx context.Context) error {
	done := s.sd.Extending(ctx, "loading engines", time.Minute)
	defer done()
	root := s.cfg.Models
	builtin := root == ""
	if builtin {
		root = BuiltinRepository(s.cfg.DataDir)
	}
	model, err := s.load(root)
	if err != nil && builtin && !errors.Is(err, trt.ErrOutOfMemory) && !errors.Is(err, trt.ErrFaultInjected) {
		// The built-in repository is ours to (re)build: missing, or from another build.
		s.log.Info("building the reference model repository", "dir", root, "reason", err)
		if _, berr := models.BuildReference(root, models.BuildOptions{Profiles: builtinProfiles}); berr != nil {
			return fmt.Errorf("build reference model repository in %s: %w", root, berr)
		}
		model, err = s.load(root)
	}
	if err != nil {
		return fmt.Errorf("--models %s, --model-profile %s: %w", root, s.cfg.ModelProfile, err)
	}
	s.model = model
	s.loaded.Set(true)
	return nil
}

func (s *ModelsService) load(root string) (*models.Model, error) {
	repo, err := models.Open(root)
	if err != nil {
		return nil, err
	}
	p, err := repo.Profile(s.cfg.ModelProfile)
	if err != nil {
		return nil, err
	}
	return models.LoadModel(s.dev.Device(), repo, p, models.LoadOptions{
		Log:      s.log,
		Progress: func(c string) { s.sd.Status("loading engine " + c) },
	})
}

func (s *ModelsService) stop(context.Context) error {
	s.loaded.Set(false)
	if s.model != nil {
		s.model.Release()
		s.model = nil
	}
	return nil
}

// ModelsModule provides the ModelsService.
var ModelsModule = fx.Module("models", fx.Provide(NewModelsService))
