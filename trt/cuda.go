package trt

// The cuda device's extra surface: the driver's own memory figures next to the ledger,
// the host staging totals, and copy throughput. All of it also works on the host device
// (driver memory = the ledger's capacity − used / capacity, no staging, memcpy timing), so
// callers need no kind switch.
//
// The cuda device loads the CUDA driver at run time (dlopen "libcuda.so.1", or the path
// in $DEMON_CUDA_LIBRARY): demon builds and runs without CUDA installed, and creating a
// cuda device on such a machine fails with ErrCUDA and "no CUDA driver (...)".

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "demon/demon.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unsafe"
)

// CUDALibraryEnv names the environment variable that overrides the CUDA driver library
// the cuda device loads (default "libcuda.so.1"). Tests point it at a fake driver.
const CUDALibraryEnv = "DEMON_CUDA_LIBRARY"

// CUDAUnavailable reports whether err says that this machine has no CUDA at all: the
// driver library could not be loaded ("no CUDA driver (...)") or the driver found no
// CUDA-capable device (CUDA_ERROR_NO_DEVICE from cuInit). Any other failure to create a
// cuda device (a missing entry point, a driver/GPU error, an unknown ordinal) means CUDA is
// there but broken, which the gpu tier must report as a failure rather than as "no GPU".
func CUDAUnavailable(err error) bool {
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrCUDA) {
		return false
	}
	return strings.HasPrefix(e.Msg, "no CUDA driver (") || strings.Contains(e.Msg, "cuInit: CUDA_ERROR_NO_DEVICE")
}

// GPUUUID returns the GPU's UUID in NVML's form ("GPU-xxxxxxxx-xxxx-…"), which is how
// NVML telemetry finds the NVML device that is this CUDA ordinal (NVML and CUDA may
// number GPUs differently). It is "" on the host device and when the driver cannot say
// (no cuDeviceGetUuid). The cuda device names it in its description (", uuid GPU-…, "),
// which is where it is read from.
func (d *Device) GPUUUID() string {
	if d.Kind() != DeviceCUDA {
		return ""
	}
	_, rest, ok := strings.Cut(d.String(), ", uuid GPU-")
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, ",")
	return "GPU-" + id
}

// DriverMemory returns the driver's free and total memory for the device: cuMemGetInfo
// on a cuda device (free counts every process and the CUDA context, and the driver frees
// asynchronously: compare with WaitDriverMemory, not right after a free), the ledger's
// capacity − used and capacity on the host device. Safe from any goroutine.
func (d *Device) DriverMemory() (free, total uint64, err error) {
	err = d.use("driver memory", func(h *C.dm_device) error {
		var f, t C.uint64_t
		var e C.dm_error
		if err := check("driver memory", C.dm_device_driver_memory(h, &f, &t, &e), &e); err != nil {
			return err
		}
		free, total = uint64(f), uint64(t)
		return nil
	})
	return free, total, err
}

// StagingTotals returns the device's host staging accounting: the pinned host shadows a
// cuda device uses to run the CPU reference engines and streams. Staging is host memory,
// so it is not part of the ledger's UsedBytes or capacity; each staging block is a live
// handle of kind "staging" on the ledger (counted in LiveHandles here too), and its bytes
// are these totals. CapacityBytes is math.MaxUint64 (no limit of its own). All zero on the
// host device. Safe from any goroutine.
func (d *Device) StagingTotals() (LedgerTotals, error) {
	var t LedgerTotals
	err := d.use("staging totals", func(h *C.dm_device) error {
		var ct C.dm_ledger_totals
		var e C.dm_error
		if err := check("staging totals", C.dm_device_staging_totals(h, &ct, &e), &e); err != nil {
			return err
		}
		t = totalsFromC(&ct)
		return nil
	})
	return t, err
}

// CopyThroughput is what TimeCopies measured.
type CopyThroughput struct {
	// Bytes is the size of each copy.
	Bytes uint64
	// Iterations is the number of copies each way.
	Iterations int
	// HostToDevice and DeviceToHost are the total times of the copies each way.
	HostToDevice, DeviceToHost time.Duration
}

// HostToDeviceGBps returns the host-to-device throughput in GB/s (10^9 bytes per second).
func (c CopyThroughput) HostToDeviceGBps() float64 {
	return gbps(c.Bytes, c.Iterations, c.HostToDevice)
}

// DeviceToHostGBps returns the device-to-host throughput in GB/s (10^9 bytes per second).
func (c CopyThroughput) DeviceToHostGBps() float64 {
	return gbps(c.Bytes, c.Iterations, c.DeviceToHost)
}

func gbps(bytes uint64, n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) * float64(n) / d.Seconds() / 1e9
}

// TimeCopies measures copy throughput: it allocates bytes of device memory for owner
// (through the ledger; fault point device.alloc) and as much staging memory, times
// iterations host-to-device and then device-to-host copies (on a cuda device: async from
// pinned memory on a private stream, timed with CUDA events), and frees both before it
// returns. For the GPU check, not for the hot path.
func (d *Device) TimeCopies(bytes uint64, iterations int, owner string) (CopyThroughput, error) {
	co := C.CString(owner)
	defer C.free(unsafe.Pointer(co))
	var out CopyThroughput
	err := d.use("time copies", func(h *C.dm_device) error {
		var ct C.dm_copy_timing
		var e C.dm_error
		if err := check("time copies", C.dm_device_time_copies(h, C.uint64_t(bytes), C.int(iterations), co, &ct, &e), &e); err != nil {
			return err
		}
		ms := func(v C.double) time.Duration { return time.Duration(float64(v) * float64(time.Millisecond)) }
		out = CopyThroughput{Bytes: uint64(ct.bytes), Iterations: int(ct.iterations), HostToDevice: ms(ct.h2d_ms), DeviceToHost: ms(ct.d2h_ms)}
		return nil
	})
	return out, err
}

// WaitDriverMemory polls the device's driver memory (DriverMemory) until the free memory
// is back to within tolerance bytes of baselineFree, or timeout passes. It returns the
// last free figure it read, and on timeout an error naming the shortfall. A GPU frees
// memory asynchronously, so leak checks take baselineFree after a warm-up and call this
// after the work under test instead of reading DriverMemory once. It polls every 10 ms,
// at most until ctx is done.
func WaitDriverMemory(ctx context.Context, d *Device, baselineFree, tolerance uint64, timeout time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		free, _, err := d.DriverMemory()
		if err != nil {
			return 0, err
		}
		if free+tolerance >= baselineFree {
			return free, nil
		}
		select {
		case <-ctx.Done():
			return free, fmt.Errorf("driver free memory %d bytes is %d bytes below the baseline %d (tolerance %d) after %v",
				free, baselineFree-free, baselineFree, tolerance, timeout)
		case <-tick.C:
		}
	}
}

// SettledDriverFree reads the device's driver free memory (DriverMemory) every interval
// until agree further readings in a row equal the one before them, or timeout passes (or
// ctx ends), and returns the last reading: the baseline for a leak check on a GPU, taken
// once the driver's asynchronous frees have landed.
func SettledDriverFree(ctx context.Context, d *Device, agree int, interval, timeout time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last uint64
	for same := -1; same < agree; {
		free, _, err := d.DriverMemory()
		if err != nil {
			return 0, err
		}
		if free == last {
			same++
		} else {
			same = 0
		}
		last = free
		if same >= agree {
			break
		}
		select {
		case <-ctx.Done():
			return last, nil
		case <-time.After(interval):
		}
	}
	return last, nil
}
