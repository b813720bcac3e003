package trttest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/demon-audio/demon/trt"
)

// FakeCUDAOptions configure the FAKE CUDA driver FakeCUDA builds (see
// native/tests/fake_cuda/fake_cuda.c for what it does and does not model).
type FakeCUDAOptions struct {
	// TotalBytes is the fake GPU's memory (default 1 GiB); it becomes the cuda device's
	// ledger capacity. Large values cost nothing: untouched memory is never committed.
	TotalBytes uint64
	// ReservedBytes is memory "others" hold (the CUDA context, other processes): the
	// driver refuses allocations the ledger admits once it runs out.
	ReservedBytes uint64
	// FailAlloc makes cuMemAlloc fail with CUDA_ERROR_OUT_OF_MEMORY: "all", or "N" for
	// only the Nth allocation after the device is created.
	FailAlloc string
	// FreeLag delays freed memory in cuMemGetInfo by this many further queries (a real
	// driver frees asynchronously).
	FreeLag int
	// NoPools makes the fake GPU report no memory-pool support, so the cuda device uses
	// plain cuMemAlloc / cuMemFree instead of stream-ordered allocation.
	NoPools bool
}

// FakeCUDASource returns the path of the fake driver's C source.
func FakeCUDASource(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("fake cuda: cannot locate the trttest package source")
	}
	src := filepath.Join(filepath.Dir(file), "..", "..", "native", "tests", "fake_cuda", "fake_cuda.c")
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("fake cuda: %v", err)
	}
	return src
}

// FakeCUDA compiles the FAKE CUDA driver (a test double over host memory, not NVIDIA's
// driver) into a shared library in t.TempDir() with the system C compiler ($CC or cc),
// and points trt.CUDALibraryEnv at it, with its configuration, for the rest of the test
// (t.Setenv: the test must not be parallel). Cuda devices created afterwards run on it.
// It returns the library's path.
func FakeCUDA(t testing.TB, o FakeCUDAOptions) string {
	t.Helper()
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	lib := filepath.Join(t.TempDir(), "libfakecuda.so")
	out, err := exec.Command(cc, "-shared", "-fPIC", "-O1", "-o", lib, FakeCUDASource(t), "-lpthread").CombinedOutput()
	if err != nil {
		t.Fatalf("fake cuda: building the fake driver with %s: %v\n%s", cc, err, out)
	}
	total := o.TotalBytes
	if total == 0 {
		total = 1 << 30
	}
	t.Setenv(trt.CUDALibraryEnv, lib)
	t.Setenv("DEMON_FAKE_CUDA_TOTAL_BYTES", strconv.FormatUint(total, 10))
	t.Setenv("DEMON_FAKE_CUDA_RESERVED_BYTES", strconv.FormatUint(o.ReservedBytes, 10))
	t.Setenv("DEMON_FAKE_CUDA_FAIL_ALLOC", o.FailAlloc)
	t.Setenv("DEMON_FAKE_CUDA_FREE_LAG", strconv.Itoa(o.FreeLag))
	t.Setenv("DEMON_FAKE_CUDA_NO_DEVICE", "")
	noPools := ""
	if o.NoPools {
		noPools = "1"
	}
	t.Setenv("DEMON_FAKE_CUDA_NO_POOLS", noPools)
	// A stream-ordering hazard (memory freed or read under unfinished work on another
	// stream, see fake_cuda.c) crashes the test binary rather than passing unnoticed.
	t.Setenv("DEMON_FAKE_CUDA_ABORT_ON_HAZARD", "1")
	return lib
}

// CUDADevice creates a cuda device on GPU 0 (on the fake driver after FakeCUDA) and
// closes it at the end of the test.
func CUDADevice(t testing.TB, faults *trt.Faults) *trt.Device {
	t.Helper()
	d, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceCUDA, Faults: faults})
	if err != nil {
		t.Fatalf("create cuda device: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// AllowFakeGPUEnv, set to "1", lets RequireGPU accept the fake driver: scripts/gpu-check.sh
// --fake uses it to run the gpu tier's logic (and its own parsing) without a GPU. The
// figures it then prints are the fake's, not a GPU's.
const AllowFakeGPUEnv = "DEMON_GPU_TIER_ALLOW_FAKE"

// RequireGPUEnv, set to "1", declares that this machine has a GPU, so the gpu tier must
// run: a test that would skip fails instead (scripts/gpu-check.sh sets it when
// nvidia-smi lists a GPU).
const RequireGPUEnv = "DEMON_REQUIRE_GPU"

var smiOnce sync.Once
var smiGPUs string

// GPUEvidence returns why this machine evidently has an NVIDIA GPU, or "" when nothing
// says so: $DEMON_REQUIRE_GPU=1, /dev/nvidia0 exists, or `nvidia-smi -L` lists a GPU.
func GPUEvidence() string {
	smiOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "nvidia-smi", "-L").Output()
		if err == nil {
			smiGPUs = string(out)
		}
	})
	return gpuEvidence(os.Getenv, func(p string) bool { _, err := os.Stat(p); return err == nil }, smiGPUs)
}

// gpuEvidence is GPUEvidence over its probes (the environment, a file check, and what
// `nvidia-smi -L` printed, "" when it failed or is not installed).
func gpuEvidence(getenv func(string) string, exists func(string) bool, smiList string) string {
	switch {
	case getenv(RequireGPUEnv) == "1":
		return "$" + RequireGPUEnv + "=1"
	case exists("/dev/nvidia0"):
		return "/dev/nvidia0 exists"
	}
	for _, l := range strings.Split(smiList, "\n") {
		if strings.HasPrefix(l, "GPU ") {
			return "nvidia-smi -L lists " + strings.TrimSpace(l)
		}
	}
	return ""
}

// gpuTierVerdict decides what the gpu tier does with the outcome of creating the cuda
// device (err, or the device's description): run (""), skip (skip true) or fail, with
// the message. Only "there is no CUDA here" may skip — no driver library, no CUDA
// device, or the fake driver without AllowFakeGPUEnv — and only while nothing says the
// machine has a GPU (evidence ""): a loader or driver that is broken on a GPU machine must
// not read as "no GPU".
func gpuTierVerdict(err error, desc string, allowFake bool, evidence string) (msg string, skip bool) {
	switch {
	case err != nil && !trt.CUDAUnavailable(err):
		return fmt.Sprintf("the gpu tier cannot create the cuda device (CUDA is present but failing): %v", err), false
	case err != nil:
		msg = fmt.Sprintf("no GPU for the gpu tier: %v", err)
	case strings.Contains(desc, "FAKE") && !allowFake:
		msg = fmt.Sprintf("the gpu tier needs the real CUDA driver; %s points at %s", trt.CUDALibraryEnv, desc)
	default:
		return "", false
	}
	if evidence != "" {
		return msg + "; but this machine has a GPU (" + evidence + "), so the gpu tier must run", false
	}
	return msg, true
}

// RequireGPU creates a cuda device on GPU 0 with the real driver and closes it at the end
// of the test. Without CUDA (no libcuda.so.1, no CUDA device, or $DEMON_CUDA_LIBRARY
// pointing at the fake unless AllowFakeGPUEnv is set) it skips the test with the reason —
// unless the machine evidently has a GPU (GPUEvidence), and then it fails the test, as it
// does for any other error creating the device. The gpu tier (-tags gpu) calls it first.
func RequireGPU(t testing.TB, faults *trt.Faults) *trt.Device {
	t.Helper()
	d, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceCUDA, Faults: faults})
	desc := ""
	if err == nil {
		desc = d.String()
	}
	msg, skip := gpuTierVerdict(err, desc, os.Getenv(AllowFakeGPUEnv) == "1", GPUEvidence())
	if msg != "" {
		if d != nil {
			_ = d.Close()
		}
		if skip {
			t.Skip(msg)
		}
		t.Fatal(msg)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// SettledDriverFree reads the device's driver free memory until five reads 20 ms apart
// agree (at most 3 s) and returns it: the baseline for a GPU leak check, taken after a
// warm-up once the driver's asynchronous frees have landed.
func SettledDriverFree(t testing.TB, d *trt.Device) uint64 {
	t.Helper()
	free, err := trt.SettledDriverFree(context.Background(), d, 4, 20*time.Millisecond, 3*time.Second)
	if err != nil {
		t.Fatalf("driver memory: %v", err)
	}
	return free
}

// DriverGrowth fits how a device's driver memory in use (total − free) grows over a run of
// cycles. A GPU frees asynchronously and other processes come and go, so a leak check on a
// GPU does not compare one reading with one baseline: it samples every few cycles after a
// warm-up and asserts that the least-squares growth per 1000 cycles stays under a
// tolerance. Each sample is a settled reading (SettledDriverFree), so frees still in
// flight at the end of a cycle do not count as growth.
type DriverGrowth struct {
	dev          *trt.Device
	cycles, used []float64
}

// NewDriverGrowth starts an empty fit for dev.
func NewDriverGrowth(dev *trt.Device) *DriverGrowth { return &DriverGrowth{dev: dev} }

// Sample records the driver's memory in use after cycle.
func (g *DriverGrowth) Sample(t testing.TB, cycle int) {
	t.Helper()
	free := SettledDriverFree(t, g.dev)
	_, total, err := g.dev.DriverMemory()
	if err != nil {
		t.Fatalf("driver memory: %v", err)
	}
	g.cycles = append(g.cycles, float64(cycle))
	g.used = append(g.used, float64(total)-float64(free))
}

// Len is the number of samples.
func (g *DriverGrowth) Len() int { return len(g.cycles) }

// PerThousand is the least-squares slope of memory in use against the cycle number, in
// bytes per 1000 cycles (negative: shrinking); 0 with fewer than two distinct cycles.
func (g *DriverGrowth) PerThousand() float64 {
	n := float64(len(g.cycles))
	var sx, sy float64
	for i := range g.cycles {
		sx += g.cycles[i]
		sy += g.used[i]
	}
	mx, my := sx/n, sy/n
	var sxy, sxx float64
	for i := range g.cycles {
		dx := g.cycles[i] - mx
		sxy += dx * (g.used[i] - my)
		sxx += dx * dx
	}
	if sxx == 0 {
		return 0
	}
	return sxy / sxx * 1000
}

// RequireBelow fails the test unless at least three samples were taken and the fitted
// growth per 1000 cycles is at most tolerance bytes.
func (g *DriverGrowth) RequireBelow(t testing.TB, tolerance float64) {
	t.Helper()
	if g.Len() < 3 {
		t.Fatalf("driver growth: %d samples, need at least 3 for a fit", g.Len())
	}
	if got := g.PerThousand(); got > tolerance {
		t.Fatalf("driver memory grows %.0f bytes per 1000 cycles over %d samples (cycles %.0f..%.0f), tolerance %.0f: a leak outside the ledger",
			got, g.Len(), g.cycles[0], g.cycles[len(g.cycles)-1], tolerance)
	}
}
