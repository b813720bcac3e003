package daemon

// GPU telemetry reads driver-level numbers through NVML, next to the shim's own ledger:
// the ledger says what demond believes it holds, NVML says what the driver sees (engines'
// cudaMalloc workspaces, the CUDA context, other processes). The gap is exported as
// demon_device_unaccounted_bytes (memory this process holds on the device that the ledger
// does not see): NVML's per-process figure for this PID on the GPU whose UUID is the cuda
// device's (NVML and CUDA may number GPUs differently), minus the ledger. Where NVML
// cannot give that figure — NVML off or missing, or this process not in its list because
// demond runs in a PID namespace (a container) and NVML reports host PIDs — it falls back
// to the driver's cuMemGetInfo (total − free, which counts every process on the GPU)
// minus the ledger, and says so in the "source" label. The CUDA context alone is a few
// hundred MiB; a gap that grows over sessions is a leak outside the ledger.
//
// NVML is optional: go-nvml loads libnvidia-ml at run time (dlopen in Init), so demond
// builds and runs on machines without a driver. When Init fails the module logs one line
// and exports nothing, and it calls no other NVML function afterwards (not even
// Shutdown). The telemetry depends on nvml.Interface so tests drive it with go-nvml's
// mock servers.

import (
	"context"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
)

// GPUTelemetry exports per-GPU memory and utilisation and this process's GPU memory at
// scrape time. It implements prometheus.Collector and exports nothing while NVML is
// unavailable (no GPU, no driver, --gpu-telemetry=off) or the module is stopped.
type GPUTelemetry struct {
	lib  nvml.Interface
	mode string
	log  *slog.Logger
	pid  uint32

	mu      sync.Mutex // held by Collect and stop, so NVML is never shut down mid-scrape
	active  bool
	devices []gpuDevice

	memUsed, memTotal, util, procMem *prometheus.Desc
}

type gpuDevice struct {
	h           nvml.Device
	index, uuid string
}

// GPUParams are NewGPUTelemetry's dependencies. NVML is optional: without it the real
// library (libnvidia-ml, loaded in OnStart) is used; tests supply a mock.
type GPUParams struct {
	fx.In
	Config Config
	Log    *slog.Logger
	LC     fx.Lifecycle
	NVML   nvml.Interface `optional:"true"`
}

// NewGPUTelemetry registers the telemetry's lifecycle; NVML is initialised in OnStart.
func NewGPUTelemetry(p GPUParams) *GPUTelemetry {
	lib := p.NVML
	if lib == nil {
		lib = nvml.New() // no I/O: the library is opened by Init
	}
	labels := []string{"gpu", "uuid"}
	g := &GPUTelemetry{
		lib: lib, mode: p.Config.GPUTelemetry, log: p.Log, pid: uint32(os.Getpid()),
		memUsed:  prometheus.NewDesc("demon_gpu_memory_used_bytes", "GPU memory in use on the device, all processes (NVML).", labels, nil),
		memTotal: prometheus.NewDesc("demon_gpu_memory_total_bytes", "GPU memory on the device (NVML).", labels, nil),
		util:     prometheus.NewDesc("demon_gpu_utilization_ratio", "Fraction of the last sample period a kernel ran on the GPU (NVML, 0–1).", labels, nil),
		procMem:  prometheus.NewDesc("demon_gpu_process_memory_bytes", "GPU memory this process uses on the device (NVML compute processes).", labels, nil),
	}
	p.LC.Append(fx.StartStopHook(g.start, g.stop))
	return g
}

// Active reports whether NVML was initialised and telemetry is being exported.
func (g *GPUTelemetry) Active() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.active
}

func (g *GPUTelemetry) start(context.Context) error {
	if g.mode == "off" {
		g.log.Info("GPU telemetry off (--gpu-telemetry=off)")
		return nil
	}
	if ret := g.lib.Init(); ret != nvml.SUCCESS {
		// ErrorString works without a successful Init (and without the library).
		g.log.Info("no GPU telemetry: " + ret.Error())
		return nil
	}
	devs, err := g.enumerate()
	if err != "" {
		// Undo our own Init; telemetry is optional, so start goes on without it.
		g.lib.Shutdown()
		g.log.Warn("no GPU telemetry: " + err)
		return nil
	}
	g.mu.Lock()
	g.devices, g.active = devs, true
	g.mu.Unlock()
	g.log.Info("GPU telemetry on", "gpus", len(devs))
	return nil
}

func (g *GPUTelemetry) enumerate() ([]gpuDevice, string) {
	n, ret := g.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, "device count: " + ret.Error()
	}
	devs := make([]gpuDevice, 0, n)
	for i := range n {
		h, ret := g.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, "device " + strconv.Itoa(i) + ": " + ret.Error()
		}
		uuid, ret := h.GetUUID()
		if ret != nvml.SUCCESS {
			uuid = ""
		}
		devs = append(devs, gpuDevice{h: h, index: strconv.Itoa(i), uuid: uuid})
	}
	return devs, ""
}

func (g *GPUTelemetry) stop(context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.active {
		return nil
	}
	g.active, g.devices = false, nil
	if ret := g.lib.Shutdown(); ret != nvml.SUCCESS {
		g.log.Warn("NVML shutdown failed", "err", ret.Error())
	}
	return nil
}

// Describe implements prometheus.Collector.
func (g *GPUTelemetry) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.memUsed
	ch <- g.memTotal
	ch <- g.util
	ch <- g.procMem
}

// Collect implements prometheus.Collector. A query a GPU does not support is skipped.
func (g *GPUTelemetry) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.active {
		return
	}
	for _, d := range g.devices {
		gauge := func(desc *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, d.index, d.uuid)
		}
		if m, ret := d.h.GetMemoryInfo(); ret == nvml.SUCCESS {
			gauge(g.memUsed, float64(m.Used))
			gauge(g.memTotal, float64(m.Total))
		}
		if u, ret := d.h.GetUtilizationRates(); ret == nvml.SUCCESS {
			gauge(g.util, float64(u.Gpu)/100)
		}
		if used, _, ok := g.processMemory(d.h); ok {
			// NVML reports host PIDs: inside a PID namespace (a container) this process
			// is not found and the value is 0.
			gauge(g.procMem, float64(used))
		}
	}
}

// processMemory sums this process's memory in h's compute processes. found says whether
// NVML lists this PID with a figure at all (it does not from inside a PID namespace, and
// gives NVML_VALUE_NOT_AVAILABLE in some modes); ok is false when the query failed.
func (g *GPUTelemetry) processMemory(h nvml.Device) (used uint64, found, ok bool) {
	procs, ret := h.GetComputeRunningProcesses()
	if ret != nvml.SUCCESS {
		return 0, false, false
	}
	for _, p := range procs {
		if p.Pid == g.pid && p.UsedGpuMemory != math.MaxUint64 { // MaxUint64: NVML_VALUE_NOT_AVAILABLE
			found = true
			used += p.UsedGpuMemory
		}
	}
	return used, found, true
}

// ProcessMemoryByUUID returns this process's memory on the GPU with the given UUID
// according to NVML. ok is false when there is no answer: telemetry inactive, no GPU with
// that UUID, the query failed, or NVML does not list this PID (a PID namespace).
func (g *GPUTelemetry) ProcessMemoryByUUID(uuid string) (bytes uint64, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.active || uuid == "" {
		return 0, false
	}
	for _, d := range g.devices {
		if d.uuid == uuid {
			used, found, ok := g.processMemory(d.h)
			return used, ok && found
		}
	}
	return 0, false
}

// Sources of demon_device_unaccounted_bytes.
const (
	// UnaccountedFromNVML: NVML's memory for this PID on the cuda device's GPU.
	UnaccountedFromNVML = "nvml_process"
	// UnaccountedFromDriver: cuMemGetInfo total − free, every process on the GPU included
	// (on the host device: the ledger itself, so the difference is 0).
	UnaccountedFromDriver = "driver_total_minus_free"
)

// unaccountedCollector exports demon_device_unaccounted_bytes at scrape time (see the
// file comment).
type unaccountedCollector struct {
	dev  *DeviceService
	gpu  *GPUTelemetry
	desc *prometheus.Desc
}

func newUnaccountedCollector(dev *DeviceService, gpu *GPUTelemetry) *unaccountedCollector {
	return &unaccountedCollector{dev: dev, gpu: gpu, desc: prometheus.NewDesc("demon_device_unaccounted_bytes",
		"Device memory this process holds that the ledger does not see (the CUDA context, driver allocations): "+
			"NVML's per-process memory on the device's GPU, matched by UUID, minus the ledger (source=\""+UnaccountedFromNVML+"\"); "+
			"where NVML cannot see this process, the driver's total − free minus the ledger, which also counts other processes "+
			"(source=\""+UnaccountedFromDriver+"\").",
		[]string{"source"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *unaccountedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector; it exports nothing before the device starts.
func (c *unaccountedCollector) Collect(ch chan<- prometheus.Metric) {
	dev := c.dev.Device()
	if dev == nil {
		return
	}
	bytes, source, err := Unaccounted(dev, c.gpu)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(bytes), source)
}

// Unaccounted returns the device memory this process holds outside dev's ledger and where
// the figure comes from (UnaccountedFromNVML or UnaccountedFromDriver); gpu may be nil.
func Unaccounted(dev *trt.Device, gpu *GPUTelemetry) (bytes int64, source string, err error) {
	tot, err := dev.Totals()
	if err != nil {
		return 0, "", err
	}
	if gpu != nil {
		if used, ok := gpu.ProcessMemoryByUUID(dev.GPUUUID()); ok {
			return int64(used) - int64(tot.UsedBytes), UnaccountedFromNVML, nil
		}
	}
	free, total, err := dev.DriverMemory()
	if err != nil {
		return 0, "", err
	}
	return int64(total-free) - int64(tot.UsedBytes), UnaccountedFromDriver, nil
}

// deviceInfoCollector exports demon_device_info: which device and engines this demond
// runs, so that a client (demon-bench --target) can name the machine behind its figures.
type deviceInfoCollector struct {
	dev    *DeviceService
	models *ModelsService // nil in graphs without the models module
	desc   *prometheus.Desc
}

// deviceInfoParams are newDeviceInfoCollector's dependencies.
type deviceInfoParams struct {
	fx.In
	Device *DeviceService
	Models *ModelsService `optional:"true"`
}

func newDeviceInfoCollector(p deviceInfoParams) *deviceInfoCollector {
	return &deviceInfoCollector{dev: p.Device, models: p.Models, desc: prometheus.NewDesc("demon_device_info",
		"Always 1 while the device is up; the labels name it: kind (host or cuda), device (its description), "+
			"uuid (the GPU's, \"\" on the host device) and engine (the decoder's backend, version and variant; \"\" before the model loads).",
		[]string{"kind", "device", "uuid", "engine"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *deviceInfoCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector; it exports nothing before the device starts.
func (c *deviceInfoCollector) Collect(ch chan<- prometheus.Metric) {
	dev := c.dev.Device()
	if dev == nil {
		return
	}
	engine := ""
	if c.models != nil {
		if m := c.models.Model(); m != nil {
			md := m.Metadata(models.Decoder)
			engine = strings.TrimSpace(md.Backend + " " + md.BackendVersion + " " + md.Variant)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, dev.Kind().String(), dev.String(), dev.GPUUUID(), engine)
}

// GPUModule provides the GPUTelemetry and contributes it, the unaccounted-memory gauge and
// the device's info metric to the metrics registry.
var GPUModule = fx.Module("gpu",
	fx.Provide(NewGPUTelemetry),
	fx.Provide(AsCollector(func(g *GPUTelemetry) *GPUTelemetry { return g })),
	fx.Provide(AsCollector(newUnaccountedCollector)),
	fx.Provide(AsCollector(newDeviceInfoCollector)),
)
