package trt

/*
#include "demon/demon.h"
*/
import "C"

import (
	"sync"
	"unsafe"
)

// Buffer is device memory allocated through the C API.
type Buffer struct {
	mu    sync.Mutex
	h     *C.dm_buffer
	st    *handleState
	size  uint64
	owner string
}

// Close frees the buffer. It is idempotent. A context the buffer is bound to refuses to
// execute afterwards; while one is executing with it, Close waits for it to finish.
func (b *Buffer) Close() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.h == nil {
		return nil
	}
	C.dm_buffer_free(&b.h) // frees the handle and sets b.h to nil
	b.st.release()
	return nil
}

// Size returns the buffer's size in bytes.
func (b *Buffer) Size() uint64 { return b.size }

// Owner returns the owner tag the buffer is accounted to.
func (b *Buffer) Owner() string { return b.owner }

// Write copies src into the buffer at offset (host to device).
func (b *Buffer) Write(offset uint64, src []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.h == nil {
		return errClosed("write buffer", "buffer")
	}
	var e C.dm_error
	var p unsafe.Pointer
	if len(src) > 0 {
		p = unsafe.Pointer(&src[0])
	}
	return check("write buffer", C.dm_buffer_write(b.h, C.uint64_t(offset), p, C.uint64_t(len(src)), &e), &e)
}

// Read copies len(dst) bytes from the buffer at offset into dst (device to host).
func (b *Buffer) Read(offset uint64, dst []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.h == nil {
		return errClosed("read buffer", "buffer")
	}
	var e C.dm_error
	var p unsafe.Pointer
	if len(dst) > 0 {
		p = unsafe.Pointer(&dst[0])
	}
	return check("read buffer", C.dm_buffer_read(b.h, C.uint64_t(offset), p, C.uint64_t(len(dst)), &e), &e)
}

// WriteFloat32 copies src into the buffer at byte offset (host to device).
func (b *Buffer) WriteFloat32(offset uint64, src []float32) error {
	if len(src) == 0 {
		return nil
	}
	return b.Write(offset, unsafe.Slice((*byte)(unsafe.Pointer(&src[0])), 4*len(src)))
}

// ReadFloat32 copies len(dst) floats from the buffer at byte offset (device to host).
func (b *Buffer) ReadFloat32(offset uint64, dst []float32) error {
	if len(dst) == 0 {
		return nil
	}
	return b.Read(offset, unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)))
}

// WriteInt32 copies src into the buffer at byte offset (host to device).
func (b *Buffer) WriteInt32(offset uint64, src []int32) error {
	if len(src) == 0 {
		return nil
	}
	return b.Write(offset, unsafe.Slice((*byte)(unsafe.Pointer(&src[0])), 4*len(src)))
}
