package trt_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

func writeRef(t testing.TB, component, variant string, duration int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), component+".engine")
	require.NoError(t, trt.WriteReferenceEngine(trt.ReferenceOptions{Component: component, Variant: variant, Seed: 7, DurationS: duration}, p))
	return p
}

func loadRef(t testing.TB, d *trt.Device, component, variant string, duration int) *trt.Engine {
	t.Helper()
	e, err := trt.LoadEngine(d, trt.EngineOptions{
		Path: writeRef(t, component, variant, duration), Component: component,
		Backend: "cpu-ref", BackendVersion: "cpu-ref-1", Owner: "model:" + component,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func f32bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func bytesf32(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func buffer(t testing.TB, d *trt.Device, v []float32) *trt.Buffer {
	t.Helper()
	b, err := d.Alloc(uint64(4*len(v)), "test:io")
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	require.NoError(t, b.Write(0, f32bytes(v)))
	return b
}

func TestOracleDecoderClosedForm(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 1<<30, nil)
	eng := loadRef(t, d, "decoder", "oracle", 10)
	io := eng.IO()
	require.Len(t, io, 5)
	assert.Equal(t, "hidden_states", io[0].Name)
	assert.Equal(t, []int64{8, 250, 64}, io[0].Max)
	assert.False(t, io[4].Input)

	ctx, err := eng.NewContext("session:t")
	require.NoError(t, err)
	defer ctx.Close()
	const B, T, L = 2, 126, 32
	hs := make([]float32, B*T*64)
	ts := []float32{0.5, 0.25}
	enc := make([]float32, B*L*2048)
	cl := make([]float32, B*T*128)
	for i := range hs {
		hs[i] = float32(i%97) / 97
	}
	for i := range enc {
		enc[i] = float32(i%13) / 13
	}
	for i := range cl {
		cl[i] = float32(i%7) / 7
	}
	bufs := map[string]*trt.Buffer{
		"hidden_states": buffer(t, d, hs), "timestep": buffer(t, d, ts),
		"encoder_hidden_states": buffer(t, d, enc), "context_latents": buffer(t, d, cl),
		"velocity": buffer(t, d, make([]float32, B*T*64)),
	}
	require.NoError(t, ctx.SetShape("hidden_states", B, T, 64))
	require.NoError(t, ctx.SetShape("timestep", B))
	require.NoError(t, ctx.SetShape("encoder_hidden_states", B, L, 2048))
	require.NoError(t, ctx.SetShape("context_latents", B, T, 128))
	for n, b := range bufs {
		require.NoError(t, ctx.Bind(n, b))
	}
	require.NoError(t, ctx.Execute())
	shape, err := ctx.Shape("velocity")
	require.NoError(t, err)
	assert.Equal(t, []int64{B, T, 64}, shape)

	out := make([]byte, 4*B*T*64)
	require.NoError(t, bufs["velocity"].Read(0, out))
	v := bytesf32(out)
	for b := range B {
		for tau := range T {
			for c := range 64 {
				var mean float64
				for l := range L {
					mean += float64(enc[(b*L+l)*2048+c])
				}
				target := float64(cl[(b*T+tau)*128+c]) + 0.1*mean/L
				want := (float64(hs[(b*T+tau)*64+c]) - target) / float64(ts[b])
				require.InDelta(t, want, float64(v[(b*T+tau)*64+c]), 1e-4, "b=%d tau=%d c=%d", b, tau, c)
			}
		}
	}
}

func TestContextRejectsBadShapesAndBindings(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 1<<30, nil)
	eng := loadRef(t, d, "decoder", "oracle", 10)
	ctx, err := eng.NewContext("session:t")
	require.NoError(t, err)
	defer ctx.Close()

	err = ctx.SetShape("hidden_states", 9, 126, 64)
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "dim 0 = 9 is outside the engine profile [1, 8]")
	require.ErrorIs(t, ctx.SetShape("hidden_states", 1, 126), trt.ErrInvalidArgument)
	require.ErrorIs(t, ctx.SetShape("nope", 1), trt.ErrNotFound)
	require.ErrorIs(t, ctx.SetShape("velocity", 1, 126, 64), trt.ErrInvalidArgument)
	err = ctx.Execute()
	require.ErrorIs(t, err, trt.ErrState)
	assert.Contains(t, err.Error(), "input hidden_states has no shape set")

	require.NoError(t, ctx.SetShape("hidden_states", 1, 127, 64))
	require.NoError(t, ctx.SetShape("timestep", 1))
	require.NoError(t, ctx.SetShape("encoder_hidden_states", 1, 32, 2048))
	require.NoError(t, ctx.SetShape("context_latents", 1, 127, 128))
	err = ctx.Execute()
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "must be even")

	require.NoError(t, ctx.SetShape("hidden_states", 1, 126, 64))
	require.NoError(t, ctx.SetShape("context_latents", 1, 126, 128))
	err = ctx.Execute()
	require.ErrorIs(t, err, trt.ErrState)
	assert.Contains(t, err.Error(), "is not bound")
	small := buffer(t, d, make([]float32, 10))
	for _, n := range []string{"hidden_states", "timestep", "encoder_hidden_states", "context_latents", "velocity"} {
		require.NoError(t, ctx.Bind(n, small))
	}
	err = ctx.Execute()
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "needs 32256 bytes, bound buffer has 40")
}

func TestEngineFilesAreValidated(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 1<<30, nil)
	good := writeRef(t, "decoder", "tiny-dit", 10)
	data, err := os.ReadFile(good)
	require.NoError(t, err)
	require.NoError(t, trt.CheckEngineFile(data))

	write := func(b []byte) string {
		p := filepath.Join(t.TempDir(), "x.engine")
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	flipped := append([]byte(nil), data...)
	flipped[len(flipped)/2] ^= 0x40
	badVersion := append([]byte(nil), data...)
	badVersion[8] = 9
	trailing := append(append([]byte(nil), data...), 0)

	cases := []struct {
		name    string
		path    string
		opts    func(*trt.EngineOptions)
		want    error
		wantMsg string
	}{
		{"missing file", filepath.Join(t.TempDir(), "nope.engine"), nil, trt.ErrNotFound, "No such file"},
		{"not an engine", write([]byte("hello world, not an engine")), nil, trt.ErrCorrupt, "bad magic"},
		{"truncated", write(data[:len(data)-100]), nil, trt.ErrCorrupt, "truncated engine file"},
		{"flipped byte", write(flipped), nil, trt.ErrCorrupt, "checksum mismatch"},
		{"future format", write(badVersion), nil, trt.ErrMismatch, "format version 9 is not supported"},
		{"trailing bytes", write(trailing), nil, trt.ErrCorrupt, "1 trailing bytes"},
		{"wrong component", good, func(o *trt.EngineOptions) { o.Component = "vae_encode" }, trt.ErrMismatch, "engine is a decoder, expected a vae_encode"},
		{"wrong backend version", good, func(o *trt.EngineOptions) { o.BackendVersion = "cpu-ref-0" }, trt.ErrMismatch, "built for cpu-ref cpu-ref-1, expected cpu-ref cpu-ref-0"},
		{"tensorrt without sdk", good, func(o *trt.EngineOptions) { o.Backend = "tensorrt" }, trt.ErrUnsupported, "no TensorRT backend"},
		{"unknown backend", good, func(o *trt.EngineOptions) { o.Backend = "onnx" }, trt.ErrUnsupported, "unknown engine backend onnx"},
		{"bad owner", good, func(o *trt.EngineOptions) { o.Owner = "" }, trt.ErrInvalidArgument, "owner tag"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := trttest.Snapshot(t, d)
			o := trt.EngineOptions{Path: tc.path, Component: "decoder", Backend: "cpu-ref", BackendVersion: "cpu-ref-1", Owner: "model:decoder"}
			if tc.opts != nil {
				tc.opts(&o)
			}
			_, err := trt.LoadEngine(d, o)
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.wantMsg)
			trttest.RequireBaseline(t, d, base)
		})
	}
}

func TestDeclaredFootprintsAreReserved(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 24<<30, nil)
	e, err := trt.LoadEngine(d, trt.EngineOptions{
		Path: writeRef(t, "decoder", "tiny-dit", 60), Component: "decoder", Backend: "cpu-ref", BackendVersion: "cpu-ref-1",
		Owner: "model:decoder", FootprintBytes: 4_300_000_000, ContextBytes: 1_600_000_000,
	})
	require.NoError(t, err)
	l := trttest.Snapshot(t, d)
	assert.Equal(t, uint64(4_300_000_000), l.Owner("model:decoder").UsedBytes)
	assert.Equal(t, int64(1), l.Kind("engine").LiveHandles)
	assert.Equal(t, uint64(1_600_000_000), e.ContextBytes(), "declared context bytes exceed what the DiT needs")

	c, err := e.NewContext("session:a")
	require.NoError(t, err)
	l = trttest.Snapshot(t, d)
	assert.Equal(t, uint64(1_600_000_000), l.Owner("session:a").UsedBytes)
	assert.Equal(t, int64(1), l.Kind("context").LiveHandles)

	// A context keeps the engine alive after the engine handle is closed.
	require.NoError(t, e.Close())
	assert.Equal(t, uint64(4_300_000_000), trttest.Snapshot(t, d).Owner("model:decoder").UsedBytes)
	require.NoError(t, c.Close())
	assert.Zero(t, trttest.Snapshot(t, d).Totals.UsedBytes)
}

func TestModelFaultPointsLeaveNothing(t *testing.T) {
	trttest.NoLeaks(t)
	for _, point := range []string{"model.load.decoder", "model.place_decoder", "session.init.context"} {
		t.Run(point, func(t *testing.T) {
			f := trttest.Faults(t, point+"=error")
			d := trttest.HostDevice(t, 24<<30, f)
			base := trttest.Snapshot(t, d)
			e, err := trt.LoadEngine(d, trt.EngineOptions{
				Path: writeRef(t, "decoder", "tiny-dit", 10), Component: "decoder", Backend: "cpu-ref",
				BackendVersion: "cpu-ref-1", Owner: "model:decoder", FootprintBytes: 1 << 30,
			})
			if point == "session.init.context" {
				require.NoError(t, err)
				_, err = e.NewContext("session:x")
				require.NoError(t, e.Close())
			}
			require.ErrorIs(t, err, trt.ErrFaultInjected)
			assert.Equal(t, int64(1), f.Hits(point))
			trttest.RequireBaseline(t, d, base)
		})
	}
}

func TestOOMLoadingAnEngineIsClean(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 1<<30, nil)
	base := trttest.Snapshot(t, d)
	_, err := trt.LoadEngine(d, trt.EngineOptions{
		Path: writeRef(t, "vae_encode", "", 60), Component: "vae_encode", Backend: "cpu-ref",
		BackendVersion: "cpu-ref-1", Owner: "model:vae_encode", FootprintBytes: 2 << 30,
	})
	require.ErrorIs(t, err, trt.ErrOutOfMemory)
	assert.Contains(t, err.Error(), "requested 2147483648 bytes (2.00 GiB) for model:vae_encode")
	trttest.RequireBaseline(t, d, base)
}

func FuzzEngineFile(f *testing.F) {
	dir := f.TempDir()
	for _, c := range []struct{ comp, variant string }{{"decoder", "tiny-dit"}, {"decoder", "oracle"}, {"vae_encode", ""}} {
		p := filepath.Join(dir, c.comp+c.variant)
		if err := trt.WriteReferenceEngine(trt.ReferenceOptions{Component: c.comp, Variant: c.variant, Seed: 1, DurationS: 10}, p); err != nil {
			f.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		f.Add(b)
		if len(b) > 64 {
			f.Add(b[:64])
		}
	}
	f.Add([]byte{})
	f.Add([]byte("DMENGINE"))
	f.Fuzz(func(t *testing.T, data []byte) {
		err := trt.CheckEngineFile(data)
		if err != nil && !(errorsIs(err, trt.ErrCorrupt) || errorsIs(err, trt.ErrMismatch)) {
			t.Fatalf("unexpected error class: %v", err)
		}
	})
}

// engineContainer wraps header and payload in the engine file container (engine_file.h):
// magic, version 1, header length, header, payload length, payload, IEEE CRC-32.
func engineContainer(header, payload []byte) []byte {
	out := append([]byte("DMENGINE"), 1, 0, 0, 0)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(header)))
	out = append(out, header...)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(payload)))
	out = append(out, payload...)
	return binary.LittleEndian.AppendUint32(out, crc32.ChecksumIEEE(out))
}

// splitEngineFile is engineContainer's inverse for a well-formed file.
func splitEngineFile(t testing.TB, data []byte) (header, payload []byte) {
	h := int(binary.LittleEndian.Uint32(data[12:]))
	header = data[16 : 16+h]
	p := int(binary.LittleEndian.Uint64(data[16+h:]))
	payload = data[24+h : 24+h+p]
	require.Equal(t, data, engineContainer(header, payload), "the container round-trips")
	return header, payload
}

// FuzzEngineLoad gets past the container checks that stop almost every FuzzEngineFile input
// (a mutated byte nearly always fails the CRC first): it mutates an engine's header and
// payload, rebuilds a valid container around them (lengths and CRC recomputed), and loads the
// result, so the header fields (component, backend, duration_s, max_batch, variant, seed) and
// the payload parsers (the tiny-DiT weights) see the mutations. Every failure must be one of
// the input-error classes; anything else (an internal error, a crash) is a bug.
func FuzzEngineLoad(f *testing.F) {
	dir := f.TempDir()
	for _, c := range []struct{ comp, variant string }{
		{"decoder", "tiny-dit"}, {"decoder", "oracle"}, {"vae_encode", ""}, {"vae_decode", ""},
		{"vae_decode_windowed", ""}, {"text_encoder", ""}, {"stem_separator", ""},
	} {
		p := filepath.Join(dir, c.comp+c.variant)
		require.NoError(f, trt.WriteReferenceEngine(trt.ReferenceOptions{Component: c.comp, Variant: c.variant, Seed: 1, DurationS: 10}, p))
		b, err := os.ReadFile(p)
		require.NoError(f, err)
		h, pl := splitEngineFile(f, b)
		f.Add(h, pl)
		if len(pl) > 64 {
			f.Add(h, pl[:len(pl)/2]) // a truncated payload, in a valid container
		}
	}
	d, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceHost, CapacityBytes: 1 << 30})
	require.NoError(f, err)
	f.Cleanup(func() { _ = d.Close() })
	path := filepath.Join(dir, "fuzz.engine")
	f.Fuzz(func(t *testing.T, header, payload []byte) {
		if len(header) > 64<<10 || len(payload) > 8<<20 {
			t.Skip("larger than the container allows / than is useful")
		}
		require.NoError(t, os.WriteFile(path, engineContainer(header, payload), 0o600))
		// Ask for what the header claims, so that most inputs get past the identity checks
		// and into the component's own parsing.
		o := trt.EngineOptions{Path: path, Component: "decoder", Backend: "cpu-ref", BackendVersion: "cpu-ref-1", Owner: "model:fuzz"}
		for _, line := range strings.Split(string(header), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && k == "component" && v != "" {
				o.Component = v
			}
		}
		e, err := trt.LoadEngine(d, o)
		if err == nil {
			require.NoError(t, e.Close())
		}
		// Loaded and closed, or refused: either way the device is back to empty.
		if tot, lerr := d.Totals(); lerr != nil || tot.UsedBytes != 0 || tot.LiveHandles != 0 {
			t.Fatalf("device not back to empty after %v: %+v (%v)", err, tot, lerr)
		}
		if err == nil {
			return
		}
		for _, want := range []error{trt.ErrCorrupt, trt.ErrMismatch, trt.ErrInvalidArgument, trt.ErrUnsupported} {
			if errors.Is(err, want) {
				return
			}
		}
		t.Fatalf("unexpected error class: %v", err)
	})
}

// tickBudgetMs is the real-time tick budget at the realtime app's defaults (depth 4, steps
// 8, 0.36 s slices): fresh audio at >= 1 s/s needs >= 2.8 finished latents/s, and a tick
// finishes depth/steps = 0.5 of one, so a tick may take at most ~180 ms (spec/engine.md §7.3).
const tickBudgetMs = 180.0

// BenchmarkTinyDiTDecoder times one forward of the reference tiny-DiT decoder engine through
// the Go binding at the shape one depth-4 tick batches: B=4 rows, T=1500 frames (60 s) and
// L = the engine profile's optimum conditioning length (what the reference profile is built
// for). The forward is the bulk of a tick, so budget-x (tick budget / ms per forward) must stay
// well above 1; the target is under 90 ms, i.e. budget-x >= 2.
func BenchmarkTinyDiTDecoder(b *testing.B) {
	d := trttest.HostDevice(b, 8<<30, nil)
	eng := loadRef(b, d, "decoder", "tiny-dit", 60)
	var L int64
	for _, io := range eng.IO() {
		if io.Name == "encoder_hidden_states" {
			L = io.Opt[1]
		}
	}
	require.Positive(b, L, "the decoder declares an encoder_hidden_states profile")
	const B, T = 4, 1500
	b.Run(fmt.Sprintf("B=%d/T=%d/L=%d", B, T, L), func(b *testing.B) {
		ctx, err := eng.NewContext("session:bench")
		require.NoError(b, err)
		defer ctx.Close()
		rng := rand.New(rand.NewPCG(1, 2))
		fill := func(n int64, scale float32) []float32 {
			v := make([]float32, n)
			for i := range v {
				v[i] = scale * float32(rng.NormFloat64())
			}
			return v
		}
		ts := make([]float32, B)
		for i := range ts {
			ts[i] = 0.2 + 0.2*float32(i) // four slots at different steps, as in a tick
		}
		out := buffer(b, d, make([]float32, B*T*64))
		bufs := map[string]*trt.Buffer{
			"hidden_states": buffer(b, d, fill(B*T*64, 1)), "timestep": buffer(b, d, ts),
			"encoder_hidden_states": buffer(b, d, fill(B*L*2048, 0.02)),
			"context_latents":       buffer(b, d, fill(B*T*128, 1)), "velocity": out,
		}
		require.NoError(b, ctx.SetShape("hidden_states", B, T, 64))
		require.NoError(b, ctx.SetShape("timestep", B))
		require.NoError(b, ctx.SetShape("encoder_hidden_states", B, L, 2048))
		require.NoError(b, ctx.SetShape("context_latents", B, T, 128))
		for n, buf := range bufs {
			require.NoError(b, ctx.Bind(n, buf))
		}
		require.NoError(b, ctx.Execute()) // warm the pool and the scratch pages
		b.ResetTimer()
		for b.Loop() {
			if err := ctx.Execute(); err != nil {
				b.Fatal(err)
			}
		}
		ms := float64(b.Elapsed().Microseconds()) / 1e3 / float64(b.N)
		b.ReportMetric(ms, "ms/forward")
		b.ReportMetric(tickBudgetMs/ms, "budget-x")
		b.StopTimer()
		v := make([]float32, B*T*64)
		require.NoError(b, out.ReadFloat32(0, v))
		for i, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				b.Fatalf("velocity[%d] = %v: the forward is not finite", i, x)
			}
		}
	})
}

// oracleContext is a decoder context with every tensor bound to its own fresh buffer at a
// small valid shape; it returns the context and the buffers by tensor name.
func oracleContext(t *testing.T, d *trt.Device, eng *trt.Engine) (*trt.Context, map[string]*trt.Buffer) {
	t.Helper()
	ctx, err := eng.NewContext("session:t")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ctx.Close() })
	const B, T, L = 1, 126, 32
	require.NoError(t, ctx.SetShape("hidden_states", B, T, 64))
	require.NoError(t, ctx.SetShape("timestep", B))
	require.NoError(t, ctx.SetShape("encoder_hidden_states", B, L, 2048))
	require.NoError(t, ctx.SetShape("context_latents", B, T, 128))
	bufs := map[string]*trt.Buffer{
		"hidden_states": buffer(t, d, make([]float32, B*T*64)), "timestep": buffer(t, d, []float32{0.5}),
		"encoder_hidden_states": buffer(t, d, make([]float32, B*L*2048)),
		"context_latents":       buffer(t, d, make([]float32, B*T*128)), "velocity": buffer(t, d, make([]float32, B*T*64)),
	}
	for n, b := range bufs {
		require.NoError(t, ctx.Bind(n, b))
	}
	return ctx, bufs
}

// The native context keeps bound buffers' raw addresses: closing a bound buffer must make
// Execute fail cleanly instead of running the engine on freed memory (under -asan a
// use-after-free here would abort the test), and rebinding recovers.
func TestExecuteRefusesAClosedBoundBuffer(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 1<<30, nil)
	eng := loadRef(t, d, "decoder", "oracle", 10)
	ctx, bufs := oracleContext(t, d, eng)
	require.NoError(t, ctx.Execute())

	before := trttest.Snapshot(t, d).Owner("test:io")
	require.NoError(t, bufs["velocity"].Close(), "closing a bound buffer is allowed")
	after := trttest.Snapshot(t, d).Owner("test:io")
	assert.Equal(t, before.UsedBytes-bufs["velocity"].Size(), after.UsedBytes, "and frees it at once")

	err := ctx.Execute()
	require.ErrorIs(t, err, trt.ErrState)
	assert.Contains(t, err.Error(), "tensor velocity is bound to a closed buffer")
	err = ctx.Bind("velocity", bufs["velocity"])
	require.ErrorIs(t, err, trt.ErrState, "a closed buffer cannot be bound")
	require.ErrorIs(t, ctx.Bind("velocity", nil), trt.ErrInvalidArgument)

	fresh := buffer(t, d, make([]float32, 126*64))
	require.NoError(t, ctx.Bind("velocity", fresh))
	require.NoError(t, ctx.Execute(), "rebinding the tensor recovers")

	// A buffer bound to two tensors is checked (and held) once per Execute, not deadlocked.
	require.NoError(t, ctx.Bind("velocity", bufs["hidden_states"]))
	require.NoError(t, ctx.Execute())
	require.NoError(t, bufs["hidden_states"].Close())
	err = ctx.Execute()
	require.ErrorIs(t, err, trt.ErrState)
	assert.Contains(t, err.Error(), "is bound to a closed buffer")
}

// A buffer closed while another goroutine executes with it: Close waits for the run, and
// every Execute either runs on live memory or fails with ErrState (run with -race/-asan).
func TestBufferCloseRacingExecute(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 1<<30, nil)
	eng := loadRef(t, d, "decoder", "oracle", 10)
	ctx, bufs := oracleContext(t, d, eng)
	var runs atomic.Int64
	done := make(chan error, 1)
	go func() {
		for {
			if err := ctx.Execute(); err != nil {
				done <- err
				return
			}
			runs.Add(1)
		}
	}()
	for runs.Load() < 3 {
		runtime.Gosched()
	}
	require.NoError(t, bufs["encoder_hidden_states"].Close())
	err := <-done
	require.ErrorIs(t, err, trt.ErrState)
	assert.Contains(t, err.Error(), "tensor encoder_hidden_states is bound to a closed buffer")
}

// Contexts share their engine's weights: a second context on one engine leaves the engine
// owner's bytes alone and adds only its own activation memory, and a context that does not
// fit in what is left fails with ErrOutOfMemory leaving the ledger exactly as it was.
func TestContextsShareWeightsAndOOMCleanly(t *testing.T) {
	trttest.NoLeaks(t)
	const weights, activation = 1 << 30, 300 << 20
	// Room for the weights and two contexts, and 100 MiB short of a third.
	d := trttest.HostDevice(t, weights+3*activation-100<<20, nil)
	e, err := trt.LoadEngine(d, trt.EngineOptions{
		Path: writeRef(t, "decoder", "oracle", 10), Component: "decoder", Backend: "cpu-ref", BackendVersion: "cpu-ref-1",
		Owner: "model:decoder", FootprintBytes: weights, ContextBytes: activation,
	})
	require.NoError(t, err)
	defer e.Close()
	require.Equal(t, uint64(activation), e.ContextBytes())
	loaded := trttest.Snapshot(t, d)
	require.Equal(t, uint64(weights), loaded.Owner("model:decoder").UsedBytes)

	a, err := e.NewContext("session:a")
	require.NoError(t, err)
	defer a.Close()
	b, err := e.NewContext("session:b")
	require.NoError(t, err)
	defer b.Close()
	l := trttest.Snapshot(t, d)
	assert.Equal(t, uint64(weights), l.Owner("model:decoder").UsedBytes, "contexts do not copy the weights")
	assert.Equal(t, uint64(activation), l.Owner("session:a").UsedBytes)
	assert.Equal(t, uint64(activation), l.Owner("session:b").UsedBytes)
	assert.Equal(t, int64(2), l.Kind("context").LiveHandles)
	assert.Equal(t, loaded.Totals.UsedBytes+2*activation, l.Totals.UsedBytes)

	// Both contexts run independently on the shared engine.
	for _, c := range []*trt.Context{a, b} {
		require.NoError(t, c.SetShape("hidden_states", 1, 126, 64))
		require.NoError(t, c.SetShape("timestep", 1))
		require.NoError(t, c.SetShape("encoder_hidden_states", 1, 32, 2048))
		require.NoError(t, c.SetShape("context_latents", 1, 126, 128))
		for n, size := range map[string]int{"hidden_states": 126 * 64, "timestep": 1, "encoder_hidden_states": 32 * 2048, "context_latents": 126 * 128, "velocity": 126 * 64} {
			v := make([]float32, size)
			if n == "timestep" {
				v[0] = 0.5
			}
			require.NoError(t, c.Bind(n, buffer(t, d, v)))
		}
		require.NoError(t, c.Execute())
	}

	base := trttest.Snapshot(t, d)
	_, err = e.NewContext("session:c")
	require.ErrorIs(t, err, trt.ErrOutOfMemory)
	assert.Contains(t, err.Error(), "for session:c")
	trttest.RequireBaseline(t, d, base)
	assert.Zero(t, trttest.Snapshot(t, d).Owner("session:c").UsedBytes)
}

// runEngine executes eng once on a fresh context: input name with its shape and data, and
// one output of outFloats floats, which it returns.
func runEngine(t *testing.T, d *trt.Device, eng *trt.Engine, in string, shape []int64, data []float32, out string, outFloats int) []float32 {
	t.Helper()
	ctx, err := eng.NewContext("session:t")
	require.NoError(t, err)
	defer ctx.Close()
	require.NoError(t, ctx.SetShape(in, shape...))
	require.NoError(t, ctx.Bind(in, buffer(t, d, data)))
	ob := buffer(t, d, make([]float32, outFloats))
	require.NoError(t, ctx.Bind(out, ob))
	require.NoError(t, ctx.Execute())
	v := make([]float32, outFloats)
	require.NoError(t, ob.ReadFloat32(0, v))
	return v
}

func normalLatents(frames int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	z := make([]float32, 64*frames)
	for i := range z {
		z[i] = float32(rng.NormFloat64())
	}
	return z
}

// The windowed decode engine (what the stream runs every slice) produces exactly, bit for
// bit, the same samples as the full vae_decode engine does for those frames, anywhere in
// the song (spec/engine.md §7.4): both through the engines, not the ref functions. The
// reference VAE crossfades each frame with its neighbours (receptive field ±1 frame), so a
// window's own edge frames differ from the full decode — which is what the stream's 8-frame
// margins are for — and every frame inside them must match. A cyclic window that wraps at
// the loop point matches the full decode of the latent as a loop (its last frame, then the
// latent, then its first frame: the edges then see the loop's real neighbours).
func TestWindowedVAEEngineEqualsSliceOfFullDecode(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 1<<30, nil)
	full := loadRef(t, d, "vae_decode", "", 10)
	win := loadRef(t, d, "vae_decode_windowed", "", 240)
	const T, W, hop, left = 150, 25, 1920, 8
	z := normalLatents(T, 3)
	// loop = [z_{T−1}, z_0 … z_{T−1}, z_0]: frame f of the loop decode is frame f+1 here.
	loop := make([]float32, 64*(T+2))
	for c := range 64 {
		row := loop[c*(T+2) : (c+1)*(T+2)]
		row[0], row[T+1] = z[c*T+T-1], z[c*T]
		copy(row[1:T+1], z[c*T:(c+1)*T])
	}
	audio := runEngine(t, d, full, "latents", []int64{1, 64, T}, z, "audio", 2*T*hop)
	loopAudio := runEngine(t, d, full, "latents", []int64{1, 64, T + 2}, loop, "audio", 2*(T+2)*hop)
	sameFrame := func(a []float32, aFrames, f int, b []float32, bFrames, g int) bool {
		for ch := range 2 {
			x := a[(ch*aFrames+f)*hop : (ch*aFrames+f+1)*hop]
			y := b[(ch*bFrames+g)*hop : (ch*bFrames+g+1)*hop]
			for i := range x {
				if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
					return false
				}
			}
		}
		return true
	}
	for f := 1; f < T-1; f++ {
		require.True(t, sameFrame(audio, T, f, loopAudio, T+2, f+1), "interior frame %d of the loop decode", f)
	}
	require.False(t, sameFrame(audio, T, 0, loopAudio, T+2, 1), "the first frame sees the loop's last frame")

	// ks is the first kept frame; the window is frames (ks−8 … ks+16) mod T (spec §4.9).
	for _, ks := range []int{0, 2, 37, T - 9, T - 3} {
		window := make([]float32, 64*W) // [1,64,25] channel-major
		frames := make([]int, W)
		for i := range W {
			frames[i] = ((ks-left+i)%T + T) % T
			for c := range 64 {
				window[c*W+i] = z[c*T+frames[i]]
			}
		}
		got := runEngine(t, d, win, "latents", []int64{1, 64, W}, window, "audio", 2*W*hop)
		for i := 1; i < W-1; i++ {
			require.True(t, sameFrame(got, W, i, loopAudio, T+2, frames[i]+1),
				"window at ks=%d, frame %d (latent frame %d) differs from the full decode", ks, i, frames[i])
			if frames[i] != 0 && frames[i] != T-1 {
				require.True(t, sameFrame(got, W, i, audio, T, frames[i]), "ks=%d, latent frame %d", ks, frames[i])
			}
		}
		assert.False(t, sameFrame(got, W, 0, loopAudio, T+2, frames[0]+1),
			"ks=%d: the window's first frame has no left neighbour, so the margins matter", ks)
	}
	var energy float64
	for _, v := range audio {
		energy += float64(v) * float64(v)
	}
	assert.Greater(t, energy/float64(len(audio)), 0.01, "the decode is not silent, so the comparison means something")
}

// vae_encode ∘ vae_decode through the engines: decoding latents that change every frame and
// encoding the audio gives the latents back (the encoder undoes the decoder's crossfade
// exactly) with logvar −20, and decoding those again reproduces the audio; off-basis audio
// (noise) is projected, never amplified.
func TestVAEEngineRoundTrip(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 1<<30, nil)
	enc := loadRef(t, d, "vae_encode", "", 10)
	dec := loadRef(t, d, "vae_decode", "", 10)
	const T, hop = 150, 1920
	z := normalLatents(T, 5)
	audio := runEngine(t, d, dec, "latents", []int64{1, 64, T}, z, "audio", 2*T*hop)
	moments := runEngine(t, d, enc, "audio", []int64{1, 2, T * hop}, audio, "moments", 128*T)
	maxErr := func(a, b []float32) float64 {
		var m float64
		for i := range a {
			m = max(m, math.Abs(float64(a[i])-float64(b[i])))
		}
		return m
	}
	means := moments[:64*T]
	assert.Less(t, maxErr(z, means), 1e-4, "encode(decode(z)) == z")
	for i, lv := range moments[64*T:] {
		require.Equal(t, float32(-20), lv, "logvar[%d]", i)
	}
	again := runEngine(t, d, dec, "latents", []int64{1, 64, T}, means, "audio", 2*T*hop)
	assert.Less(t, maxErr(audio, again), 1e-4, "decode(encode(audio)) == audio for in-basis audio")

	rng := rand.New(rand.NewPCG(9, 9))
	noise := make([]float32, 2*T*hop)
	var e0 float64
	for i := range noise {
		noise[i] = 0.1 * float32(rng.NormFloat64())
		e0 += float64(noise[i]) * float64(noise[i])
	}
	m := runEngine(t, d, enc, "audio", []int64{1, 2, T * hop}, noise, "moments", 128*T)
	proj := runEngine(t, d, dec, "latents", []int64{1, 64, T}, m[:64*T], "audio", 2*T*hop)
	var e1 float64
	for _, v := range proj {
		e1 += float64(v) * float64(v)
	}
	assert.Less(t, e1, 0.1*e0, "64 of 3840 dimensions per frame: most of white noise's energy is projected away")
	assert.Positive(t, e1)
	m2 := runEngine(t, d, enc, "audio", []int64{1, 2, T * hop}, proj, "moments", 128*T)
	assert.Less(t, maxErr(m[:64*T], m2[:64*T]), 1e-4, "the projection is idempotent")
}

// bf16bytes encodes floats as bfloat16 (round to nearest, ties to even), little-endian.
func bf16bytes(v []float32) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		u := math.Float32bits(x)
		u += 0x7FFF + (u>>16)&1
		binary.LittleEndian.PutUint16(b[2*i:], uint16(u>>16))
	}
	return b
}

func bytesbf16(b []byte) []float32 {
	v := make([]float32, len(b)/2)
	for i := range v {
		v[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
	}
	return v
}

func loadRefOpts(t testing.TB, d *trt.Device, ro trt.ReferenceOptions) *trt.Engine {
	t.Helper()
	p := filepath.Join(t.TempDir(), ro.Component+".engine")
	require.NoError(t, trt.WriteReferenceEngine(ro, p))
	e, err := trt.LoadEngine(d, trt.EngineOptions{Path: p, Component: ro.Component, Backend: "cpu-ref", BackendVersion: "cpu-ref-1", Owner: "model:" + ro.Component})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func maxAbsDiff(a, b []float32) (diff, scale float64) {
	for i := range a {
		diff = max(diff, math.Abs(float64(a[i])-float64(b[i])))
		scale = max(scale, math.Abs(float64(a[i])))
	}
	return diff, scale
}

// runDecoder runs one decoder call, sizing and encoding every binding from the dtype the
// engine's I/O table declares (as any caller must), and returns the velocity as floats.
func runDecoder(t *testing.T, d *trt.Device, eng *trt.Engine, in map[string][]float32, shapes map[string][]int64) []float32 {
	t.Helper()
	ctx, err := eng.NewContext("session:t")
	require.NoError(t, err)
	defer ctx.Close()
	for name, dims := range shapes {
		require.NoError(t, ctx.SetShape(name, dims...))
	}
	inputs, outputs := map[string][]byte{}, map[string]uint64{}
	velocity := trt.TensorDesc{}
	for _, td := range eng.IO() {
		if !td.Input {
			velocity = td
			outputs[td.Name] = td.Bytes(shapes["hidden_states"]...)
			continue
		}
		data := f32bytes(in[td.Name])
		if td.DType == trt.BFloat16 {
			data = bf16bytes(in[td.Name])
		}
		require.Equal(t, td.Bytes(shapes[td.Name]...), uint64(len(data)), td.Name)
		inputs[td.Name] = data
	}
	raw := execute(t, d, ctx, inputs, outputs)[velocity.Name]
	if velocity.DType == trt.BFloat16 {
		return bytesbf16(raw)
	}
	return bytesf32(raw)
}

// The mixed reference decoder declares DEMON's 2B I/O dtypes; a caller that reads them gets
// the fp32 engine's answer within bf16 rounding, and one that assumes fp32 where the engine
// says otherwise is refused by size when its buffer is too small.
func TestMixedDecoderBindsInTheDeclaredDtypes(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 2<<30, nil)
	fp32 := loadRefOpts(t, d, trt.ReferenceOptions{Component: "decoder", Variant: "tiny-dit", Seed: 3, DurationS: 10})
	mixed := loadRefOpts(t, d, trt.ReferenceOptions{Component: "decoder", Variant: "tiny-dit", Seed: 3, DurationS: 10, IOPrecision: "mixed"})
	want := map[string]trt.DType{"hidden_states": trt.BFloat16, "timestep": trt.Float32, "encoder_hidden_states": trt.BFloat16, "context_latents": trt.BFloat16, "velocity": trt.BFloat16}
	for _, td := range mixed.IO() {
		assert.Equal(t, want[td.Name], td.DType, td.Name)
	}
	for _, td := range fp32.IO() {
		assert.Equal(t, trt.Float32, td.DType, td.Name)
	}

	const B, T, L = 2, 126, 48
	rng := rand.New(rand.NewPCG(1, 2))
	randn := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	in := map[string][]float32{"hidden_states": randn(B * T * 64), "timestep": {0.7, 0.2}, "encoder_hidden_states": randn(B * L * 2048), "context_latents": randn(B * T * 128)}
	shapes := map[string][]int64{"hidden_states": {B, T, 64}, "timestep": {B}, "encoder_hidden_states": {B, L, 2048}, "context_latents": {B, T, 128}}
	a := runDecoder(t, d, fp32, in, shapes)
	b := runDecoder(t, d, mixed, in, shapes)
	diff, scale := maxAbsDiff(a, b)
	require.Positive(t, scale)
	assert.Greater(t, diff, scale/4096, "bf16 I/O rounds")
	assert.Less(t, diff, 4*scale/256, "within a few bf16 steps (8 significant bits) of the fp32 engine")

	// Sized as if everything were bf16: the fp32 timestep is refused by size.
	ctx, err := mixed.NewContext("session:t")
	require.NoError(t, err)
	defer ctx.Close()
	for name, dims := range shapes {
		require.NoError(t, ctx.SetShape(name, dims...))
	}
	for _, td := range mixed.IO() {
		dims := shapes[td.Name]
		if !td.Input {
			dims = shapes["hidden_states"]
		}
		assumed := trt.TensorDesc{DType: trt.BFloat16}
		buf, err := d.Alloc(assumed.Bytes(dims...), "test:io")
		require.NoError(t, err)
		defer buf.Close()
		require.NoError(t, ctx.Bind(td.Name, buf))
	}
	err = ctx.Execute()
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "tensor timestep needs 8 bytes, bound buffer has 4")
}

// Every dimension carries its symbol, and inputs that share one must agree: the error names
// both tensors and the symbol.
func TestDimensionSymbols(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 1<<30, nil)
	dec := loadRef(t, d, "decoder", "oracle", 10)
	got := map[string][]string{}
	for _, td := range dec.IO() {
		got[td.Name] = td.Symbols
	}
	assert.Equal(t, map[string][]string{
		"hidden_states": {"B", "T", ""}, "timestep": {"B"}, "encoder_hidden_states": {"B", "L", ""},
		"context_latents": {"B", "T", ""}, "velocity": {"B", "T", ""},
	}, got)
	te := loadRef(t, d, "text_encoder", "", 240)
	assert.Equal(t, []string{"", "L"}, te.IO()[0].Symbols)

	ctx, err := dec.NewContext("session:t")
	require.NoError(t, err)
	defer ctx.Close()
	require.NoError(t, ctx.SetShape("hidden_states", 2, 126, 64))
	require.NoError(t, ctx.SetShape("timestep", 2))
	require.NoError(t, ctx.SetShape("encoder_hidden_states", 3, 32, 2048))
	require.NoError(t, ctx.SetShape("context_latents", 2, 126, 128))
	err = ctx.Execute()
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "tensor encoder_hidden_states dim 0 (B) = 3, but tensor hidden_states dim 0 (B) = 2: dimensions named B must be equal")
}

// InspectEngine reads the table an engine will have without a device: equal to the loaded
// engine's, and refusing what a load would refuse before allocating.
func TestInspectEngineMatchesTheLoadedTable(t *testing.T) {
	trttest.NoLeaks(t)
	for _, ro := range []trt.ReferenceOptions{
		{Component: "decoder", Variant: "tiny-dit", DurationS: 10, IOPrecision: "mixed"},
		{Component: "vae_encode", DurationS: 60}, {Component: "vae_decode", DurationS: 60},
		{Component: "vae_decode_windowed", DurationS: 240}, {Component: "text_encoder", DurationS: 240},
		{Component: "stem_separator", DurationS: 240},
	} {
		t.Run(ro.Component, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.engine")
			ro.Seed = 1
			require.NoError(t, trt.WriteReferenceEngine(ro, p))
			o := trt.EngineOptions{Path: p, Component: ro.Component, Backend: "cpu-ref", BackendVersion: "cpu-ref-1", Owner: "model:x"}
			io, err := trt.InspectEngine(o)
			require.NoError(t, err)
			d := trttest.HostDevice(t, 1<<30, nil)
			e, err := trt.LoadEngine(d, o)
			require.NoError(t, err)
			defer e.Close()
			assert.Equal(t, e.IO(), io)
		})
	}
	p := writeRef(t, "decoder", "oracle", 10)
	o := trt.EngineOptions{Path: p, Component: "vae_encode", Backend: "cpu-ref", BackendVersion: "cpu-ref-1"}
	_, err := trt.InspectEngine(o)
	require.ErrorIs(t, err, trt.ErrMismatch)
	assert.Contains(t, err.Error(), "engine is a decoder, expected a vae_encode")
	o.Path = filepath.Join(t.TempDir(), "missing.engine")
	_, err = trt.InspectEngine(o)
	require.ErrorIs(t, err, trt.ErrNotFound)
}

// A stream on a mixed (bf16 I/O) oracle decoder converges to what the fp32 stream produces,
// within bf16 rounding: the stream drives the engine's seam, which applies the declared
// dtypes, so nothing above the engine assumes fp32.
func TestStreamOnAMixedDecoderConverges(t *testing.T) {
	trttest.NoLeaks(t)
	const frames = 250
	run := func(precision string) []float32 {
		d := trttest.HostDevice(t, 4<<30, nil)
		dec := loadRefOpts(t, d, trt.ReferenceOptions{Component: "decoder", Variant: "oracle", Seed: 1, DurationS: 60, IOPrecision: precision})
		vae := loadRef(t, d, "vae_decode_windowed", "", 240)
		ctx, err := dec.NewContext("session:s")
		require.NoError(t, err)
		defer ctx.Close()
		s, err := trt.NewStream(ctx, vae, "session:s", trt.StreamOptions{Frames: frames, MaxDepth: 4, Depth: 1, Steps: 8, Shift: 3, MaxCondLen: 64, VAEWindow: 0.36, LeadS: 0.5})
		require.NoError(t, err)
		defer s.Close()
		moments := make([]float32, 128*frames) // means [64,T] then logvar [64,T]
		for c := range 64 {
			for f := range frames {
				moments[c*frames+f] = float32(math.Sin(float64(c*7+f) / 9))
				moments[(64+c)*frames+f] = -20
			}
		}
		require.NoError(t, s.SetSource(buffer(t, d, moments), frames))
		cond := make([]float32, 40*2048)
		for i := range cond {
			cond[i] = float32(i%29) / 290
		}
		require.NoError(t, s.SetCondition(trt.CondPromptA, buffer(t, d, cond), 40))
		require.NoError(t, s.SetPlayback(make([]float32, 2*frames*1920)))
		p := defaultTick()
		p.Depth, p.PlayheadS = 1, 2
		slice := make([]float32, trt.MaxSliceFloats)
		for range 20 {
			res, err := s.Tick(p, slice)
			require.NoError(t, err)
			if res.Emitted {
				return append([]float32(nil), slice[:2*res.NumSamples]...)
			}
		}
		t.Fatal("no latent emitted")
		return nil
	}
	a, b := run("fp32"), run("mixed")
	require.Equal(t, len(a), len(b))
	diff, scale := maxAbsDiff(a, b)
	require.Positive(t, scale, "the slice is audible")
	assert.Greater(t, diff, scale/4096, "the bf16 decoder rounds")
	assert.Less(t, diff, 4*scale/256, "and lands within a few bf16 steps of the fp32 result")
}

// amplitude is the amplitude of the f Hz component of x (48 kHz; a whole number of cycles).
func amplitude(x []float32, f float64) float64 {
	var re, im float64
	for n, v := range x {
		ph := 2 * math.Pi * f * float64(n) / 48000
		re += float64(v) * math.Cos(ph)
		im -= float64(v) * math.Sin(ph)
	}
	return 2 * math.Hypot(re, im) / float64(len(x))
}

// loadReferenceModel builds a small reference repository and loads its profile on d; the
// model is released when the test ends.
func loadReferenceModel(t *testing.T, d *trt.Device) *models.Model {
	t.Helper()
	repo, err := models.BuildReference(t.TempDir(), models.BuildOptions{
		Profiles:   []models.ProfileSpec{{Name: "ref-10s", DurationS: 10, DecoderVariant: "oracle"}},
		Footprints: models.FootprintsActual,
	})
	require.NoError(t, err)
	p, err := repo.Profile("ref-10s")
	require.NoError(t, err)
	m, err := models.LoadModel(d, repo, p, models.LoadOptions{})
	require.NoError(t, err)
	return m
}

// execute binds inputs (written as given) and fresh outputs of the given sizes, runs the
// context, and returns the outputs' bytes.
func execute(t *testing.T, d *trt.Device, ctx *trt.Context, inputs map[string][]byte, outputs map[string]uint64) map[string][]byte {
	t.Helper()
	bufs := map[string]*trt.Buffer{}
	for name, data := range inputs {
		b, err := d.Alloc(uint64(len(data)), "test:io")
		require.NoError(t, err)
		defer b.Close()
		require.NoError(t, b.Write(0, data))
		require.NoError(t, ctx.Bind(name, b))
	}
	for name, n := range outputs {
		b, err := d.Alloc(n, "test:io")
		require.NoError(t, err)
		defer b.Close()
		require.NoError(t, ctx.Bind(name, b))
		bufs[name] = b
	}
	require.NoError(t, ctx.Execute())
	out := map[string][]byte{}
	for name, b := range bufs {
		out[name] = make([]byte, b.Size())
		require.NoError(t, b.Read(0, out[name]))
	}
	return out
}

func int32bytes(v []int32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return b
}

// The text encoder through the model repository: embeddings depend on the token id alone
// (a repeated id repeats its row, padding id 0 is a zero row), rows have the reference's
// scale (0.02 · N(0,1)), runs are deterministic, and the ledger returns to baseline.
func TestTextEncoderThroughTheReferenceRepository(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 2<<30, nil)
	base := trttest.Snapshot(t, d)
	m := loadReferenceModel(t, d)
	te := m.Engine(models.TextEncoder)

	ids, err := trt.Tokenize(trt.Prompt{Tags: "warm analog synth, 120 bpm"}, false)
	require.NoError(t, err)
	const L = 40
	require.GreaterOrEqual(t, len(ids), L)
	ids = append([]int32(nil), ids[:L]...)
	ids[5], ids[9] = 4242, 4242 // one id twice
	ids[L-1], ids[L-2] = 0, 0   // padding
	run := func() []float32 {
		ctx, err := te.NewContext("session:t")
		require.NoError(t, err)
		defer ctx.Close()
		require.NoError(t, ctx.SetShape("token_ids", 1, L))
		out := execute(t, d, ctx, map[string][]byte{"token_ids": int32bytes(ids)}, map[string]uint64{"encoder_hidden_states": L * 2048 * 4})
		shape, err := ctx.Shape("encoder_hidden_states")
		require.NoError(t, err)
		assert.Equal(t, []int64{1, L, 2048}, shape)
		return bytesf32(out["encoder_hidden_states"])
	}
	emb := run()
	assert.Equal(t, emb, run(), "deterministic")
	row := func(i int) []float32 { return emb[i*2048 : (i+1)*2048] }
	assert.Equal(t, row(5), row(9), "an embedding depends on the token id alone")
	assert.NotEqual(t, row(5), row(6))
	for _, i := range []int{L - 2, L - 1} {
		for _, v := range row(i) {
			require.Zero(t, v, "padding row %d", i)
		}
	}
	var sum float64
	for i := range L - 2 {
		for _, v := range row(i) {
			sum += float64(v) * float64(v)
		}
	}
	rms := math.Sqrt(sum / float64((L-2)*2048))
	assert.InDelta(t, 0.02, rms, 0.002, "rows are 0.02 · N(0,1)")

	ctx, err := te.NewContext("session:t")
	require.NoError(t, err)
	require.NoError(t, ctx.SetShape("token_ids", 1, 32))
	bad := make([]int32, 32)
	bad[3] = 1 << 30
	tok, err := d.Alloc(4*32, "test:io")
	require.NoError(t, err)
	out, err := d.Alloc(32*2048*4, "test:io")
	require.NoError(t, err)
	require.NoError(t, tok.WriteInt32(0, bad))
	require.NoError(t, ctx.Bind("token_ids", tok))
	require.NoError(t, ctx.Bind("encoder_hidden_states", out))
	err = ctx.Execute()
	require.ErrorIs(t, err, trt.ErrInvalidArgument)
	assert.Contains(t, err.Error(), "token id 1073741824 outside")
	require.NoError(t, ctx.Close())
	require.NoError(t, tok.Close())
	require.NoError(t, out.Close())

	m.Release()
	trttest.RequireBaseline(t, d, base)
}

// The stem separator through the model repository: vocals + instruments == the mix, bit for
// bit; the voice band goes to the vocals; runs are deterministic; the ledger returns to
// baseline.
func TestStemSeparatorThroughTheReferenceRepository(t *testing.T) {
	trttest.NoLeaks(t)
	d := trttest.HostDevice(t, 2<<30, nil)
	base := trttest.Snapshot(t, d)
	m := loadReferenceModel(t, d)
	sep := m.Engine(models.StemSeparator)

	const S = 240000 // the profile minimum, 5 s
	audio := make([]float32, 2*S)
	for i := range S {
		x := float64(i) / 48000
		voice := 0.4 * math.Sin(2*math.Pi*440*x)
		bass := 0.3 * math.Sin(2*math.Pi*55*x)
		audio[i] = float32(voice + bass)              // left
		audio[S+i] = float32(voice - 0.5*bass + 0.01) // right
	}
	run := func() (vocals, instruments []float32) {
		ctx, err := sep.NewContext("session:t")
		require.NoError(t, err)
		defer ctx.Close()
		require.NoError(t, ctx.SetShape("audio", 1, 2, S))
		out := execute(t, d, ctx, map[string][]byte{"audio": f32bytes(audio)}, map[string]uint64{"vocals": 2 * S * 4, "instruments": 2 * S * 4})
		for _, name := range []string{"vocals", "instruments"} {
			shape, err := ctx.Shape(name)
			require.NoError(t, err)
			assert.Equal(t, []int64{1, 2, S}, shape, name)
		}
		return bytesf32(out["vocals"]), bytesf32(out["instruments"])
	}
	vocals, instruments := run()
	v2, i2 := run()
	assert.Equal(t, vocals, v2, "deterministic")
	assert.Equal(t, instruments, i2, "deterministic")
	for i := range audio {
		require.Equal(t, audio[i], vocals[i]+instruments[i], "sample %d: the stems sum to the mix exactly", i)
	}
	// The split is a voice-band filter (150 Hz – 4 kHz) of the mid signal: the 440 Hz tone
	// goes to the vocals, the 55 Hz bass mostly stays with the instruments.
	left := func(v []float32) []float32 { return v[:S] }
	assert.Greater(t, amplitude(left(vocals), 440), 2*amplitude(left(instruments), 440))
	assert.Greater(t, amplitude(left(instruments), 55), 2*amplitude(left(vocals), 55))

	m.Release()
	trttest.RequireBaseline(t, d, base)
}
