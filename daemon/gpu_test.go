package daemon

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/demon-audio/demon/trt/trttest"
)

// h100Server is go-nvml's DGX H100 mock with utilisation and running processes filled
// in (the mock leaves them unset), and Init/Shutdown counted.
type h100Server struct {
	*server.Server
	mu             sync.Mutex
	inits, shutdns int
}

func newH100Server(t *testing.T, ourBytes uint64) *h100Server {
	t.Helper()
	s := &h100Server{Server: dgxh100.New()}
	s.InitFunc = func() nvml.Return { s.mu.Lock(); s.inits++; s.mu.Unlock(); return nvml.SUCCESS }
	s.ShutdownFunc = func() nvml.Return { s.mu.Lock(); s.shutdns++; s.mu.Unlock(); return nvml.SUCCESS }
	pid := uint32(os.Getpid())
	for i, d := range s.Devices {
		dev := d.(*server.Device)
		dev.MemoryInfo.Used = uint64(i+1) << 30
		dev.MemoryInfo.Free = dev.MemoryInfo.Total - dev.MemoryInfo.Used
		util := uint32(10 * i)
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: util, Memory: util / 2}, nvml.SUCCESS
		}
		procs := []nvml.ProcessInfo{{Pid: pid + 1, UsedGpuMemory: 5 << 30}}
		if i == 0 {
			procs = append(procs, nvml.ProcessInfo{Pid: pid, UsedGpuMemory: ourBytes})
		}
		dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return procs, nvml.SUCCESS }
	}
	return s
}

// gather collects c into metric families by name.
func gather(t *testing.T, c prometheus.Collector) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

func gaugeFor(t *testing.T, mf *dto.MetricFamily, gpu string) float64 {
	t.Helper()
	require.NotNil(t, mf)
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "gpu" && l.GetValue() == gpu {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("%s has no gpu=%q", mf.GetName(), gpu)
	return 0
}

func gpuConfig(t *testing.T, mode string) Config {
	return serviceConfig(t, "--gpu-telemetry", mode)
}

func TestGPUTelemetryAgainstTheH100Mock(t *testing.T) {
	srv := newH100Server(t, 3<<30)
	lc := fxtest.NewLifecycle(t)
	var logs bytes.Buffer
	g := NewGPUTelemetry(GPUParams{Config: gpuConfig(t, "auto"), Log: slog.New(slog.NewTextHandler(&logs, nil)), LC: lc, NVML: srv})
	assert.Empty(t, gather(t, g), "nothing before start")
	assert.Zero(t, srv.inits, "constructor must not touch NVML")

	lc.RequireStart()
	require.True(t, g.Active())
	assert.Contains(t, logs.String(), "GPU telemetry on")
	mfs := gather(t, g)
	for _, name := range []string{"demon_gpu_memory_used_bytes", "demon_gpu_memory_total_bytes", "demon_gpu_utilization_ratio", "demon_gpu_process_memory_bytes"} {
		require.Contains(t, mfs, name)
		assert.Len(t, mfs[name].GetMetric(), 8, name)
	}
	assert.Equal(t, float64(80<<30), gaugeFor(t, mfs["demon_gpu_memory_total_bytes"], "0"))
	assert.Equal(t, float64(3<<30), gaugeFor(t, mfs["demon_gpu_memory_used_bytes"], "2"))
	assert.InDelta(t, 0.7, gaugeFor(t, mfs["demon_gpu_utilization_ratio"], "7"), 1e-9)
	assert.Equal(t, float64(3<<30), gaugeFor(t, mfs["demon_gpu_process_memory_bytes"], "0"), "only this process's memory")
	assert.Zero(t, gaugeFor(t, mfs["demon_gpu_process_memory_bytes"], "1"))
	uuid := mfs["demon_gpu_memory_total_bytes"].GetMetric()[0].GetLabel()
	assert.Equal(t, "uuid", uuid[1].GetName())
	assert.True(t, strings.HasPrefix(uuid[1].GetValue(), "GPU-"))

	lc.RequireStop()
	assert.False(t, g.Active())
	assert.Empty(t, gather(t, g), "nothing after stop")
	assert.Equal(t, 1, srv.inits)
	assert.Equal(t, 1, srv.shutdns)
}

func TestGPUTelemetryFallsBackWithoutNVML(t *testing.T) {
	cases := []struct {
		name    string
		mode    string
		initRet nvml.Return
		wantLog string
	}{
		{"library not found", "auto", nvml.ERROR_LIBRARY_NOT_FOUND, "no GPU telemetry: ERROR_LIBRARY_NOT_FOUND"},
		{"driver not loaded", "auto", nvml.ERROR_DRIVER_NOT_LOADED, "no GPU telemetry: ERROR_DRIVER_NOT_LOADED"},
		{"off", "off", nvml.SUCCESS, "GPU telemetry off"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Only Init is set: any other NVML call (Shutdown included) panics.
			lib := &mock.Interface{}
			if tc.mode != "off" {
				lib.InitFunc = func() nvml.Return { return tc.initRet }
			}
			lc := fxtest.NewLifecycle(t)
			var logs bytes.Buffer
			g := NewGPUTelemetry(GPUParams{Config: gpuConfig(t, tc.mode), Log: slog.New(slog.NewTextHandler(&logs, nil)), LC: lc, NVML: lib})
			lc.RequireStart()
			assert.False(t, g.Active())
			assert.Empty(t, gather(t, g))
			lc.RequireStop()
			assert.Contains(t, logs.String(), tc.wantLog)
			assert.Equal(t, 1, strings.Count(logs.String(), "\n"), "one line")
			if tc.mode == "off" {
				assert.Empty(t, lib.InitCalls())
			} else {
				assert.Len(t, lib.InitCalls(), 1)
			}
		})
	}
}

func TestGPUTelemetryUndoesInitWhenEnumerationFails(t *testing.T) {
	lib := &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
	}
	lc := fxtest.NewLifecycle(t)
	g := NewGPUTelemetry(GPUParams{Config: gpuConfig(t, "auto"), Log: slog.New(slog.DiscardHandler), LC: lc, NVML: lib})
	lc.RequireStart()
	assert.False(t, g.Active())
	assert.Len(t, lib.ShutdownCalls(), 1, "start undid its own Init")
	lc.RequireStop()
	assert.Len(t, lib.ShutdownCalls(), 1, "stop does not shut down twice")
}

// The real library on this machine: with a GPU it reports, without one it falls back.
func TestGPUTelemetryRealLibrary(t *testing.T) {
	lc := fxtest.NewLifecycle(t)
	var logs bytes.Buffer
	g := NewGPUTelemetry(GPUParams{Config: gpuConfig(t, "auto"), Log: slog.New(slog.NewTextHandler(&logs, nil)), LC: lc})
	lc.RequireStart()
	defer lc.RequireStop()
	if !g.Active() {
		assert.Contains(t, logs.String(), "no GPU telemetry: ")
		assert.Empty(t, gather(t, g))
		return
	}
	mfs := gather(t, g)
	assert.Contains(t, mfs, "demon_gpu_memory_total_bytes")
	assert.Contains(t, mfs, "demon_gpu_process_memory_bytes")
}

func TestGPUMetricsOnTheMetricsRoute(t *testing.T) {
	trttest.NoLeaks(t)
	lib := newH100Server(t, 1<<30)
	var srv *Server
	app := fxtest.New(t, Modules(gpuConfig(t, "auto"), slog.New(slog.DiscardHandler)),
		fx.Supply(fx.Annotate(lib, fx.As(new(nvml.Interface)))),
		fx.Populate(&srv))
	app.RequireStart()
	text := scrape(t, srv)
	app.RequireStop()
	v, ok := metricValue(t, text, `demon_gpu_process_memory_bytes{gpu="0",uuid="`+lib.Devices[0].(*server.Device).UUID+`"}`)
	require.True(t, ok, text)
	assert.Equal(t, float64(1<<30), v)
	assert.Equal(t, 1, lib.shutdns)
}
