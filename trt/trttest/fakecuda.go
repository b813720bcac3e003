package trttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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

// RequireGPU creates a cuda device on GPU 0 with the real driver and closes it at the end
// of the test, or skips the test with the reason when there is none: the driver cannot be
// loaded (no libcuda.so.1), it sees no GPU, or $DEMON_CUDA_LIBRARY points at the fake
// (unless AllowFakeGPUEnv is set). The gpu test tier (-tags gpu) calls it first.
func RequireGPU(t testing.TB, faults *trt.Faults) *trt.Device {
	t.Helper()
	d, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceCUDA, Faults: faults})
	if err != nil {
		t.Skipf("no GPU for the gpu tier: %v", err)
	}
	if s := d.String(); strings.Contains(s, "FAKE") && os.Getenv(AllowFakeGPUEnv) != "1" {
		_ = d.Close()
		t.Skipf("the gpu tier needs the real CUDA driver; %s points at %s", trt.CUDALibraryEnv, s)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// SettledDriverFree reads the device's driver free memory until five reads 20 ms apart
// agree (at most 3 s) and returns it: the baseline for a GPU leak check, taken after a
// warm-up once the driver's asynchronous frees have landed.
func SettledDriverFree(t testing.TB, d *trt.Device) uint64 {
	t.Helper()
	var last uint64
	same := 0
	for deadline := time.Now().Add(3 * time.Second); same < 4 && time.Now().Before(deadline); {
		free, _, err := d.DriverMemory()
		if err != nil {
			t.Fatalf("driver memory: %v", err)
		}
		if free == last {
			same++
		} else {
			same = 0
		}
		last = free
		time.Sleep(20 * time.Millisecond)
	}
	return last
}
