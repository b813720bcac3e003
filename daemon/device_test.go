package daemon

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

func testConfig(t *testing.T, args ...string) Config {
	t.Helper()
	base := []string{
		"--device-capacity", "64MiB", "--listen", "127.0.0.1:0", "--control-listen", "",
		"--models", testRepo(t), "--model-profile", "test-10s", "--data-dir", t.TempDir(), "--warmup=false",
	}
	c, err := LoadConfig(append(base, args...), env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	return c
}

func TestGraph(t *testing.T) {
	cfg := testConfig(t)
	require.NoError(t, fx.ValidateApp(Modules(cfg, slog.New(slog.DiscardHandler))))
}

func TestDeviceModuleStartStop(t *testing.T) {
	trttest.NoLeaks(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var svc *DeviceService
	app := fxtest.New(t, Modules(testConfig(t), log), fx.Populate(&svc))
	app.RequireStart()
	require.NotNil(t, svc.Device())
	tot, err := svc.Device().Totals()
	require.NoError(t, err)
	assert.Equal(t, uint64(64<<20), tot.CapacityBytes)
	app.RequireStop()
	assert.Nil(t, svc.Device())
	assert.Contains(t, logs.String(), "ledger at zero")
}

func TestDeviceModuleReportsLeakAtStop(t *testing.T) {
	trttest.NoLeaks(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var svc *DeviceService
	app := fxtest.New(t, Modules(testConfig(t), log), fx.Populate(&svc))
	app.RequireStart()
	b, err := svc.Device().Alloc(123, "test:leaky")
	require.NoError(t, err)
	app.RequireStop()
	assert.Contains(t, logs.String(), "native memory leaked")
	assert.Contains(t, logs.String(), "test:leaky")
	require.NoError(t, b.Close())
}

func TestStartFailuresUnwind(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr error
		wantMsg string
	}{
		{"malformed failpoints", []string{"--failpoints", "device.alloc"}, nil, trt.ErrInvalidArgument, "--failpoints / DEMON_FAILPOINTS"},
		{"unknown failpoint", []string{"--failpoints", "nope=error"}, nil, trt.ErrNotFound, "unknown fault point nope"},
		{"device create fault", []string{"--failpoints", "device.create=error"}, nil, trt.ErrFaultInjected, "create host device"},
		// The driver library is pointed at a path that does not exist, so the case fails the
		// same way on a GPU machine (where libcuda.so.1 would load) as on one without.
		{"cuda without a driver", []string{"--device", "cuda"}, map[string]string{trt.CUDALibraryEnv: "/nonexistent/libcuda.so.1"},
			trt.ErrCUDA, "create cuda device: create device: no CUDA driver (/nonexistent/libcuda.so.1 not found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			trttest.NoLeaks(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			app := fx.New(Modules(testConfig(t, tc.args...), slog.New(slog.DiscardHandler)), fx.NopLogger)
			err := app.Start(t.Context())
			require.Error(t, err)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
			}
			assert.Contains(t, err.Error(), tc.wantMsg)
			// fx has already run the OnStop hooks of the modules that started.
		})
	}
}
