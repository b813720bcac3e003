package trt

/*
#include <stdlib.h>
#include "demon/demon.h"
*/
import "C"

import (
	"fmt"
	"strings"
	"sync"
	"unsafe"
)

// DeviceKind selects a device backend.
type DeviceKind int

// Device kinds.
const (
	// DeviceHost is host memory with a configured capacity, accounted like a GPU.
	DeviceHost DeviceKind = C.DM_DEVICE_HOST
	// DeviceCUDA is an NVIDIA GPU through the CUDA driver API.
	DeviceCUDA DeviceKind = C.DM_DEVICE_CUDA
)

// String returns the kind's configuration name ("host" or "cuda").
func (k DeviceKind) String() string {
	switch k {
	case DeviceHost:
		return "host"
	case DeviceCUDA:
		return "cuda"
	}
	return fmt.Sprintf("device kind %d", int(k))
}

// ParseDeviceKind parses "host" or "cuda".
func ParseDeviceKind(s string) (DeviceKind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "host":
		return DeviceHost, nil
	case "cuda", "gpu":
		return DeviceCUDA, nil
	}
	return 0, fmt.Errorf("unknown device %q (want host or cuda)", s)
}

// DeviceOptions configure NewDevice.
type DeviceOptions struct {
	// Kind is the backend.
	Kind DeviceKind
	// CapacityBytes is what a host device may hand out.
	CapacityBytes uint64
	// Ordinal is the GPU index for DeviceCUDA.
	Ordinal int
	// Faults, if set, arms native fault points on this device. The native device keeps its
	// own reference to the registry, so Faults may be closed first: that disarms every
	// point (see Faults.Close) and the device goes on without firing any.
	Faults *Faults
}

// Device is a native device and its ledger.
type Device struct {
	mu     sync.RWMutex
	h      *C.dm_device
	st     *handleState
	kind   DeviceKind
	faults *Faults
}

// NewDevice creates a device. The caller must Close it after everything allocated on it.
func NewDevice(opts DeviceOptions) (*Device, error) {
	copts := C.dm_device_options{
		kind:           C.int(opts.Kind),
		capacity_bytes: C.uint64_t(opts.CapacityBytes),
		ordinal:        C.int(opts.Ordinal),
		faults:         opts.Faults.handle(),
	}
	var e C.dm_error
	var h *C.dm_device
	if err := check("create device", C.dm_device_create(&copts, &h, &e), &e); err != nil {
		return nil, err
	}
	d := &Device{h: h, kind: opts.Kind, faults: opts.Faults}
	d.st = track(d, "device")
	return d, nil
}

// Close frees the device handle. It is idempotent.
func (d *Device) Close() error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.h == nil {
		return nil
	}
	C.dm_device_free(&d.h) // frees the handle and sets d.h to nil
	d.st.release()
	return nil
}

// Kind returns the device's backend.
func (d *Device) Kind() DeviceKind { return d.kind }

// Faults returns the registry the device was created with (may be nil).
func (d *Device) Faults() *Faults { return d.faults }

// use runs fn with the native handle under a read lock, or returns ErrClosed.
func (d *Device) use(op string, fn func(h *C.dm_device) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.h == nil {
		return errClosed(op, "device")
	}
	return fn(d.h)
}

// String describes the device, e.g. "host device (capacity 25769803776 bytes (24.00 GiB))".
func (d *Device) String() string {
	var s string
	err := d.use("describe device", func(h *C.dm_device) error {
		var buf [256]C.char
		var e C.dm_error
		if err := check("describe device", C.dm_device_describe(h, &buf[0], C.size_t(len(buf)), &e), &e); err != nil {
			return err
		}
		s = C.GoString(&buf[0])
		return nil
	})
	if err != nil {
		return "closed device"
	}
	return s
}

// Alloc allocates zero-filled device memory of size bytes attributed to owner.
func (d *Device) Alloc(size uint64, owner string) (*Buffer, error) {
	co := C.CString(owner)
	defer C.free(unsafe.Pointer(co))
	var b *Buffer
	err := d.use("alloc buffer", func(h *C.dm_device) error {
		var e C.dm_error
		var bh *C.dm_buffer
		if err := check("alloc buffer", C.dm_buffer_alloc(h, C.uint64_t(size), co, &bh, &e), &e); err != nil {
			return err
		}
		b = &Buffer{h: bh, size: size, owner: owner}
		b.st = track(b, "buffer")
		return nil
	})
	return b, err
}
