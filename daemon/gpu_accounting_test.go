package daemon

import (
	"log/slog"
	"os"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

// fakeGPUUUID is the UUID the fake CUDA driver reports (native/tests/fake_cuda/fake_cuda.c).
const fakeGPUUUID = "GPU-fa4ec0da-0000-4000-8000-000000000001"

// unaccounted gathers demon_device_unaccounted_bytes and returns its value and source.
func unaccounted(t *testing.T, c *unaccountedCollector) (float64, string) {
	t.Helper()
	mf := gather(t, c)["demon_device_unaccounted_bytes"]
	require.NotNil(t, mf)
	require.Len(t, mf.GetMetric(), 1)
	m := mf.GetMetric()[0]
	require.Len(t, m.GetLabel(), 1)
	return m.GetGauge().GetValue(), m.GetLabel()[0].GetValue()
}

// The ledger against NVML's per-process figure, on the GPU NVML numbers differently from
// CUDA: the cuda device (the fake driver, UUID fakeGPUUUID) is NVML's device 5 here.
func TestUnaccountedMemoryAgainstNVMLByUUID(t *testing.T) {
	trttest.NoLeaks(t)
	// The driver holds 300 MiB the ledger never sees (the context, other processes).
	trttest.FakeCUDA(t, trttest.FakeCUDAOptions{TotalBytes: 8 << 30, ReservedBytes: 300 << 20})
	dev := trttest.CUDADevice(t, nil)
	require.Equal(t, fakeGPUUUID, dev.GPUUUID())
	buf, err := dev.Alloc(64<<20, "test:accounted")
	require.NoError(t, err)
	defer buf.Close()

	srv := newH100Server(t, 0)
	pid := uint32(os.Getpid())
	var ours uint64 = (64 + 250) << 20 // the buffer and a 250 MiB context, as NVML would see them
	for i, d := range srv.Devices {
		dev := d.(*server.Device)
		procs := []nvml.ProcessInfo{{Pid: pid + 1, UsedGpuMemory: 5 << 30}}
		if i == 5 {
			dev.UUID = fakeGPUUUID
			procs = append(procs, nvml.ProcessInfo{Pid: pid, UsedGpuMemory: ours})
		}
		dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return procs, nvml.SUCCESS }
	}
	lc := fxtest.NewLifecycle(t)
	g := NewGPUTelemetry(GPUParams{Config: gpuConfig(t, "auto"), Log: slog.New(slog.DiscardHandler), LC: lc, NVML: srv})
	lc.RequireStart()
	defer lc.RequireStop()
	c := newUnaccountedCollector(deviceServiceWith(dev), g)

	v, source := unaccounted(t, c)
	assert.Equal(t, UnaccountedFromNVML, source)
	assert.Equal(t, float64(250<<20), v, "NVML's figure for this PID on the matching GPU, minus the ledger")

	// NVML no longer lists this PID (demond in a PID namespace): the driver's figure,
	// which counts the whole GPU, labelled as such.
	for _, d := range srv.Devices {
		d.(*server.Device).GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
			return []nvml.ProcessInfo{{Pid: pid + 1, UsedGpuMemory: 5 << 30}}, nvml.SUCCESS
		}
	}
	v, source = unaccounted(t, c)
	assert.Equal(t, UnaccountedFromDriver, source)
	assert.Equal(t, float64(300<<20), v, "cuMemGetInfo total − free minus the ledger")
}

func TestUnaccountedMemoryWithoutNVML(t *testing.T) {
	trttest.NoLeaks(t)
	trttest.FakeCUDA(t, trttest.FakeCUDAOptions{TotalBytes: 8 << 30, ReservedBytes: 100 << 20})
	cuda := trttest.CUDADevice(t, nil)
	host := trttest.HostDevice(t, 1<<30, nil)
	assert.Empty(t, host.GPUUUID())
	for _, tc := range []struct {
		name string
		dev  *trt.Device
		want float64
	}{{"cuda", cuda, 100 << 20}, {"host: the driver figure is the ledger", host, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.dev.Alloc(3<<20, "test:accounted")
			require.NoError(t, err)
			defer b.Close()
			// nil telemetry: NVML off or missing.
			v, source := unaccounted(t, newUnaccountedCollector(deviceServiceWith(tc.dev), nil))
			assert.Equal(t, UnaccountedFromDriver, source)
			assert.Equal(t, tc.want, v)
		})
	}
	assert.Empty(t, gather(t, newUnaccountedCollector(&DeviceService{}, nil)), "nothing before the device starts")
}

// /metrics names the device and engine (demon-bench --target reads them), and the
// unaccounted gauge is exported beside them: 0 on the host device, whose driver figure is
// the ledger.
func TestDeviceInfoAndUnaccountedOnTheMetricsRoute(t *testing.T) {
	trttest.NoLeaks(t)
	var srv *Server
	app := fxtest.New(t, Modules(serviceConfig(t), slog.New(slog.DiscardHandler)), fx.Populate(&srv))
	app.RequireStart()
	text := scrape(t, srv)
	app.RequireStop()
	v, ok := metricValue(t, text, `demon_device_info{device="host device (capacity 67108864 bytes (64.00 MiB))",engine="cpu-ref cpu-ref-1 oracle",kind="host",uuid=""}`)
	require.True(t, ok, text)
	assert.Equal(t, 1.0, v)
	v, ok = metricValue(t, text, `demon_device_unaccounted_bytes{source="driver_total_minus_free"}`)
	require.True(t, ok, text)
	assert.Zero(t, v)
}

// deviceServiceWith is a DeviceService that has started with dev (nil: not started).
func deviceServiceWith(dev *trt.Device) *DeviceService {
	s := &DeviceService{}
	if dev != nil {
		s.dev.Store(dev)
	}
	return s
}
