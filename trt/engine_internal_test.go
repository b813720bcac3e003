package trt

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An engine's I/O table with an unreadable entry is an error, not a table with a hole (a
// table with a hole describes another engine, and the sidecar cross-check would then blame
// the sidecar).
func TestReadIOFailsOnAnUnreadableTensor(t *testing.T) {
	boom := &Error{Op: "describe", Code: CodeInternal, Msg: "does not fit"}
	io, err := readIO(3, func(i int) (TensorDesc, error) {
		if i == 1 {
			return TensorDesc{}, boom
		}
		return TensorDesc{Name: "t"}, nil
	})
	require.Error(t, err)
	assert.Nil(t, io)
	assert.True(t, errors.Is(err, boom))
	assert.Contains(t, err.Error(), "engine I/O table, tensor 1 of 3")

	io, err = readIO(2, func(i int) (TensorDesc, error) { return TensorDesc{Name: string(rune('a' + i))}, nil })
	require.NoError(t, err)
	assert.Equal(t, []TensorDesc{{Name: "a"}, {Name: "b"}}, io)
}
