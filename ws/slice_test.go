package ws

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSliceHeaderBytes(t *testing.T) {
	h := SliceHeader{Flags: SliceDelta, StartSample: 0x01020304, NumSamples: 17280, Channels: 2, TickMs: 1.5, DecMs: -2, NumGens: 7}
	b := AppendSliceHeader(nil, h)
	require.Len(t, b, SliceHeaderSize)
	assert.Equal(t, []byte{
		0x01,
		0x04, 0x03, 0x02, 0x01,
		0x80, 0x43, 0x00, 0x00,
		0x02, 0x00,
		0x00, 0x00, 0xc0, 0x3f,
		0x00, 0x00, 0x00, 0xc0,
		0x07, 0x00, 0x00, 0x00,
	}, b)
	got, payload, err := DecodeSliceHeader(append(b, 9, 9))
	require.NoError(t, err)
	assert.Equal(t, h, got)
	assert.Equal(t, []byte{9, 9}, payload)
}

func TestDecodeSliceHeaderErrors(t *testing.T) {
	_, _, err := DecodeSliceHeader(make([]byte, 22))
	require.ErrorIs(t, err, ErrMalformed)
	require.EqualError(t, err, "ws: slice too short: malformed message: 22 bytes, header is 23")
	b := AppendSliceHeader(nil, SliceHeader{Flags: 2})
	_, _, err = DecodeSliceHeader(b)
	require.EqualError(t, err, "ws: slice: malformed message: unknown flags 2")
}
