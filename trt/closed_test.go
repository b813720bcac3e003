package trt_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

// Every handle type refuses use after Close with an error that matches both ErrClosed
// (what the caller did) and ErrState (its code), and names the closed handle's kind.
func TestUseAfterCloseMatchesErrClosed(t *testing.T) {
	trttest.NoLeaks(t)
	r := newStreamRig(t, "oracle", 126, 1)
	d, dec, ctx, stream := r.dev, r.dec, r.ctx, r.stream
	spare, err := d.Alloc(64, "test:closed")
	require.NoError(t, err)

	closedDev, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceHost, CapacityBytes: 1 << 20})
	require.NoError(t, err)
	closedEngine := loadRef(t, d, "vae_decode_windowed", "", 10)
	closedFaults, err := trt.NewFaults("")
	require.NoError(t, err)

	for _, c := range []interface{ Close() error }{stream, spare, closedDev, closedEngine, closedFaults} {
		require.NoError(t, c.Close())
	}
	// Run in order: the context is closed by its first case, after the bind case has used
	// it open (a closed context would hide the closed buffer).
	cases := []struct {
		name string
		kind string
		run  func() error
	}{
		{"device alloc", "device", func() error { _, err := closedDev.Alloc(8, "x"); return err }},
		{"device totals", "device", func() error { _, err := closedDev.Totals(); return err }},
		{"device ledger", "device", func() error { _, err := closedDev.Ledger(); return err }},
		{"buffer write", "buffer", func() error { return spare.Write(0, []byte{1}) }},
		{"buffer read", "buffer", func() error { return spare.Read(0, make([]byte, 1)) }},
		{"context bind of a closed buffer", "buffer", func() error { return ctx.Bind("velocity", spare) }},
		{"engine new context", "engine", func() error { _, err := closedEngine.NewContext("x"); return err }},
		{"stream tick", "stream", func() error { _, err := stream.Tick(defaultTick(), nil); return err }},
		{"stream set curve", "stream", func() error { return stream.SetCurve("velocity_scale", []float32{1}) }},
		{"stream set playback", "stream", func() error { return stream.SetPlayback(make([]float32, 2)) }},
		{"faults arm", "fault registry", func() error { return closedFaults.Arm("device.alloc=error") }},
		{"context set shape", "context", func() error {
			require.NoError(t, ctx.Close())
			return ctx.SetShape("timestep", 1)
		}},
		{"context execute", "context", func() error { return ctx.Execute() }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			require.ErrorIs(t, err, trt.ErrClosed)
			require.ErrorIs(t, err, trt.ErrState)
			require.NotErrorIs(t, err, trt.ErrInvalidArgument)
			var te *trt.Error
			require.ErrorAs(t, err, &te)
			assert.Equal(t, trt.CodeState, te.Code)
			assert.Contains(t, te.Msg, tc.kind+" handle is closed")
		})
	}

	// Only closed handles match ErrClosed: a state error of an open handle does not.
	_, err = trt.NewStream(ctx, r.vae, "x", trt.StreamOptions{Frames: 126, MaxDepth: 1, Depth: 1, Steps: 1, Shift: 1, MaxCondLen: 32})
	require.ErrorIs(t, err, trt.ErrClosed, "a closed decoder context as an argument")
	open, err := d.Alloc(8, "test:closed")
	require.NoError(t, err)
	defer open.Close()
	require.NotErrorIs(t, open.Write(9, []byte{1}), trt.ErrClosed)
	fresh, err := dec.NewContext("session:fresh")
	require.NoError(t, err)
	defer fresh.Close()
	err = fresh.Execute()
	require.Error(t, err)
	require.NotErrorIs(t, err, trt.ErrClosed, "an open context with unset shapes is not closed")
}
