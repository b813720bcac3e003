package models_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
)

// testProfile is short so tests stay fast; footprints are realistic by default.
var testProfile = models.ProfileSpec{Name: "ref-10s", DurationS: 10, DecoderVariant: "tiny-dit"}

func buildRepo(t testing.TB, fp models.Footprints) *models.Repository {
	t.Helper()
	repo, err := models.BuildReference(t.TempDir(), models.BuildOptions{Profiles: []models.ProfileSpec{testProfile}, Footprints: fp})
	require.NoError(t, err)
	return repo
}

func profile(t testing.TB, repo *models.Repository) models.Profile {
	t.Helper()
	p, err := repo.Profile(testProfile.Name)
	require.NoError(t, err)
	return p
}

func TestBuildOpenLoadUnload(t *testing.T) {
	trttest.NoLeaks(t)
	repo := buildRepo(t, models.FootprintsRealistic)
	d := trttest.HostDevice(t, 24<<30, nil)
	m, err := models.LoadModel(d, repo, profile(t, repo), models.LoadOptions{})
	require.NoError(t, err)
	l := trttest.Snapshot(t, d)
	assert.Equal(t, uint64(4_300_000_000), l.Owner("model:decoder").UsedBytes)
	assert.Equal(t, uint64(1_200_000_000), l.Owner("model:text_encoder").UsedBytes)
	assert.Equal(t, int64(len(models.Components)), l.Kind("engine").LiveHandles)
	for _, c := range models.Components {
		assert.NotNil(t, m.Engine(c), c)
	}
	ref, err := m.Acquire()
	require.NoError(t, err)
	ref.Release()
	assert.Equal(t, 1, m.Refs())
	m.Release()
	m.Release() // extra releases are no-ops
	assert.Zero(t, trttest.Snapshot(t, d).Totals.UsedBytes)
	assert.Nil(t, m.Engine(models.Decoder))
	_, err = m.Acquire()
	require.ErrorIs(t, err, models.ErrReleased)
}

// A holder that releases twice drops only its own reference: the model stays loaded for
// the other holders (the loader and a second session) until they release theirs.
func TestDoubleReleaseKeepsOtherHoldersReferences(t *testing.T) {
	trttest.NoLeaks(t)
	repo := buildRepo(t, models.FootprintsActual)
	d := trttest.HostDevice(t, 1<<30, nil)
	m, err := models.LoadModel(d, repo, profile(t, repo), models.LoadOptions{})
	require.NoError(t, err)
	loaded := trttest.Snapshot(t, d).Totals.UsedBytes
	a, err := m.Acquire()
	require.NoError(t, err)
	b, err := m.Acquire()
	require.NoError(t, err)
	require.Equal(t, 3, m.Refs())

	a.Release()
	a.Release()
	a.Release()
	assert.Equal(t, 2, m.Refs(), "a's extra releases are no-ops")
	m.Release()
	m.Release()
	assert.Equal(t, 1, m.Refs(), "so are the loader's")
	require.NotNil(t, m.Engine(models.Decoder), "b still holds the model")
	assert.Equal(t, loaded, trttest.Snapshot(t, d).Totals.UsedBytes, "nothing was unloaded")

	b.Release()
	assert.Zero(t, m.Refs())
	assert.Nil(t, m.Engine(models.Decoder))
	assert.Zero(t, trttest.Snapshot(t, d).Totals.UsedBytes, "the last release unloads")
	b.Release()
	var none *models.Ref
	none.Release() // nil-safe, as the session's Close relies on
	_, err = m.Acquire()
	require.ErrorIs(t, err, models.ErrReleased)
}

// Each model.load.<component> point, and model.place_decoder: the ledger and live handles
// are back at the exact baseline, the original error comes back, and the next load works.
func TestPartialLoadRollsBack(t *testing.T) {
	trttest.NoLeaks(t)
	repo := buildRepo(t, models.FootprintsRealistic)
	points := []string{"model.place_decoder"}
	for _, c := range models.Components {
		points = append(points, "model.load."+c)
	}
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			f := trttest.Faults(t, point+"=error@1")
			d := trttest.HostDevice(t, 24<<30, f)
			base := trttest.Snapshot(t, d)
			handles := trt.LiveHandles()
			_, err := models.LoadModel(d, repo, profile(t, repo), models.LoadOptions{})
			require.ErrorIs(t, err, trt.ErrFaultInjected)
			assert.Contains(t, err.Error(), "fault injected at "+point)
			assert.Equal(t, int64(1), f.Hits(point), "the point was reached exactly once")
			trttest.RequireBaseline(t, d, base)
			assert.Equal(t, handles, trt.LiveHandles())

			m, err := models.LoadModel(d, repo, profile(t, repo), models.LoadOptions{})
			require.NoError(t, err, "the next load succeeds")
			m.Release()
			trttest.RequireBaseline(t, d, base)
		})
	}
}

func TestLoadOOMIsClean(t *testing.T) {
	trttest.NoLeaks(t)
	repo := buildRepo(t, models.FootprintsRealistic)
	d := trttest.HostDevice(t, 6<<30, nil) // the model needs ~7 GB
	base := trttest.Snapshot(t, d)
	_, err := models.LoadModel(d, repo, profile(t, repo), models.LoadOptions{})
	require.ErrorIs(t, err, trt.ErrOutOfMemory)
	assert.Contains(t, err.Error(), "for model:decoder")
	trttest.RequireBaseline(t, d, base)
}

func readMeta(t *testing.T, repo *models.Repository, name string) (string, map[string]any) {
	t.Helper()
	p := filepath.Join(repo.Root(), name, name+".engine.metadata.json")
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return p, m
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

func TestResolveErrors(t *testing.T) {
	cases := []struct {
		name    string
		mutate  func(t *testing.T, repo *models.Repository, p models.Profile)
		want    error
		wantMsg string
	}{
		{"missing engine file", func(t *testing.T, r *models.Repository, p models.Profile) {
			n := p.Engines[models.VAEEncode]
			require.NoError(t, os.Remove(filepath.Join(r.Root(), n, n+".engine")))
		}, models.ErrNotFound, "rebuild with `demond models build-reference"},
		{"missing sidecar", func(t *testing.T, r *models.Repository, p models.Profile) {
			n := p.Engines[models.TextEncoder]
			require.NoError(t, os.Remove(filepath.Join(r.Root(), n, n+".engine.metadata.json")))
		}, models.ErrNotFound, ".engine.metadata.json"},
		{"truncated engine", func(t *testing.T, r *models.Repository, p models.Profile) {
			n := p.Engines[models.Decoder]
			f := filepath.Join(r.Root(), n, n+".engine")
			b, _ := os.ReadFile(f)
			require.NoError(t, os.WriteFile(f, b[:len(b)/2], 0o644))
		}, models.ErrCorrupt, "truncated or replaced"},
		{"corrupt engine", func(t *testing.T, r *models.Repository, p models.Profile) {
			n := p.Engines[models.Decoder]
			f := filepath.Join(r.Root(), n, n+".engine")
			b, _ := os.ReadFile(f)
			b[100] ^= 1
			require.NoError(t, os.WriteFile(f, b, 0o644))
		}, models.ErrCorrupt, "checksum mismatch"},
		{"wrong component", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.VAEEncode])
			m["component"] = "vae_decode"
			writeJSON(t, path, m)
		}, models.ErrMismatch, "engine is a vae_decode, expected a vae_encode"},
		{"old backend version", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.Decoder])
			m["backend_version"] = "cpu-ref-0"
			writeJSON(t, path, m)
		}, models.ErrMismatch, "built for cpu-ref cpu-ref-0, this build loads cpu-ref-1"},
		{"tensorrt engine", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.Decoder])
			m["backend"] = "tensorrt"
			m["backend_version"] = "10.16.1.11"
			writeJSON(t, path, m)
		}, models.ErrUnsupported, "no TensorRT backend"},
		{"profile too short", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.Decoder])
			ts := m["tensors"].([]any)
			hs := ts[0].(map[string]any)
			dim := hs["dims"].([]any)[1].(map[string]any)
			dim["opt"], dim["max"] = 200, 200
			writeJSON(t, path, m)
		}, models.ErrMismatch, "profile mismatch: tensor hidden_states dim 1 max 200 does not cover 10 s"},
		{"wrong dtype", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.TextEncoder])
			m["tensors"].([]any)[0].(map[string]any)["dtype"] = "float32"
			writeJSON(t, path, m)
		}, models.ErrMismatch, "tensor token_ids has dtype float32"},
		{"unknown field", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.Decoder])
			m["surprise"] = 1
			writeJSON(t, path, m)
		}, models.ErrCorrupt, `unknown field "surprise"`},
		{"schema from the future", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.Decoder])
			m["schema_version"] = 2
			writeJSON(t, path, m)
		}, models.ErrMismatch, "schema_version 2, this build reads 1"},
		{"sidecar opt differs from the engine's", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.Decoder])
			tensor(m, 0)["dims"].([]any)[1].(map[string]any)["opt"] = 200
			writeJSON(t, path, m)
		}, models.ErrMismatch, `tensor hidden_states dim 1: sidecar profile 126/200/250 "T", engine 126/250/250 "T"`},
		{"sidecar dtype differs from the engine's", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.Decoder])
			tensor(m, 0)["dtype"] = "bfloat16"
			writeJSON(t, path, m)
		}, models.ErrMismatch, "tensor hidden_states: sidecar says input bfloat16 rank 3, engine has float32 input=true rank 3"},
		{"engine replaced by a mixed one, sidecar still fp32", func(t *testing.T, r *models.Repository, p models.Profile) {
			// Size and checksum updated, so only the cross-check with the engine's own table
			// (read from its header, before anything is allocated) can tell.
			n := p.Engines[models.Decoder]
			f := filepath.Join(r.Root(), n, n+".engine")
			require.NoError(t, trt.WriteReferenceEngine(trt.ReferenceOptions{Component: "decoder", Variant: "tiny-dit", Seed: 1, DurationS: 10, IOPrecision: "mixed"}, f))
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			sum := sha256.Sum256(b)
			path, m := readMeta(t, r, n)
			m["engine_bytes"], m["engine_sha256"] = len(b), hex.EncodeToString(sum[:])
			writeJSON(t, path, m)
		}, models.ErrMismatch, "tensor hidden_states: sidecar says input float32 rank 3, engine has bfloat16 input=true rank 3"},
		{"wrong io direction", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.Decoder])
			tensor(m, 4)["io"] = "input"
			writeJSON(t, path, m)
		}, models.ErrMismatch, "tensor velocity is an input, the contract says output"},
		{"extra tensor", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.VAEDecode])
			m["tensors"] = append(m["tensors"].([]any), map[string]any{"name": "extra", "io": "output", "dtype": "float32", "dims": []any{map[string]any{"min": 1, "opt": 1, "max": 1}}})
			writeJSON(t, path, m)
		}, models.ErrMismatch, "vae_decode engine has 3 tensors, the contract has 2"},
		{"missing tensor", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.Decoder])
			m["tensors"] = append([]any{}, m["tensors"].([]any)[:4]...)
			writeJSON(t, path, m)
		}, models.ErrMismatch, "decoder engine has 4 tensors, the contract has 5"},
		{"profile min too large", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.Decoder])
			tensor(m, 3)["dims"].([]any)[1].(map[string]any)["min"] = 200
			writeJSON(t, path, m)
		}, models.ErrMismatch, "profile mismatch: tensor context_latents dim 1 min 200, demon needs 126"},
		{"dimension renamed", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.TextEncoder])
			tensor(m, 0)["dims"].([]any)[1].(map[string]any)["symbol"] = "N"
			writeJSON(t, path, m)
		}, models.ErrMismatch, `tensor token_ids dim 1 is named "N", the contract names it "L"`},
		{"truncated sidecar", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, _ := readMeta(t, r, p.Engines[models.VAEEncode])
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, b[:len(b)/2], 0o644))
		}, models.ErrCorrupt, "metadata is not valid JSON: unexpected EOF"},
		{"unknown backend", func(t *testing.T, r *models.Repository, p models.Profile) {
			path, m := readMeta(t, r, p.Engines[models.StemSeparator])
			m["backend"] = "onnxruntime"
			writeJSON(t, path, m)
		}, models.ErrCorrupt, `unknown backend "onnxruntime" (want cpu-ref or tensorrt)`},
		{"engine symlinked outside the root", func(t *testing.T, r *models.Repository, p models.Profile) {
			n := p.Engines[models.StemSeparator]
			f := filepath.Join(r.Root(), n, n+".engine")
			outside := filepath.Join(t.TempDir(), "elsewhere.engine")
			b, _ := os.ReadFile(f)
			require.NoError(t, os.WriteFile(outside, b, 0o644))
			require.NoError(t, os.Remove(f))
			require.NoError(t, os.Symlink(outside, f))
		}, models.ErrEscape, "resolves to"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			trttest.NoLeaks(t)
			repo := buildRepo(t, models.FootprintsActual)
			p := profile(t, repo)
			tc.mutate(t, repo, p)
			d := trttest.HostDevice(t, 1<<30, nil)
			_, err := models.LoadModel(d, repo, p, models.LoadOptions{})
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.wantMsg)
			assert.Zero(t, trttest.Snapshot(t, d).Totals.Allocations, "validation happens before any allocation")
		})
	}
}

// tensor returns the i-th tensor of a sidecar decoded as generic JSON.
func tensor(m map[string]any, i int) map[string]any {
	return m["tensors"].([]any)[i].(map[string]any)
}

// A profile with a mixed decoder: named as DEMON names it, its sidecar declares bf16 I/O
// (fp32 timestep), and it loads.
func TestMixedDecoderProfile(t *testing.T) {
	trttest.NoLeaks(t)
	spec := models.ProfileSpec{Name: "mixed-10s", DurationS: 10, DecoderVariant: "oracle", DecoderPrecision: "mixed"}
	repo, err := models.BuildReference(t.TempDir(), models.BuildOptions{Profiles: []models.ProfileSpec{spec}, Footprints: models.FootprintsActual})
	require.NoError(t, err)
	p, err := repo.Profile(spec.Name)
	require.NoError(t, err)
	assert.Equal(t, "decoder_oracle_mixed_b8_10s", p.Engines[models.Decoder])
	d := trttest.HostDevice(t, 1<<30, nil)
	m, err := models.LoadModel(d, repo, p, models.LoadOptions{})
	require.NoError(t, err)
	defer m.Release()
	dtypes := map[string]string{}
	for _, ts := range m.Metadata(models.Decoder).Tensors {
		dtypes[ts.Name] = ts.DType
	}
	assert.Equal(t, map[string]string{"hidden_states": "bfloat16", "timestep": "float32", "encoder_hidden_states": "bfloat16", "context_latents": "bfloat16", "velocity": "bfloat16"}, dtypes)
	for _, td := range m.Engine(models.Decoder).IO() {
		assert.Equal(t, dtypes[td.Name], td.DType.String(), td.Name)
	}
}

func TestManifestErrors(t *testing.T) {
	valid := func() map[string]any {
		engines := map[string]any{}
		for _, c := range models.Components {
			engines[c] = c + "_ref"
		}
		return map[string]any{"schema_version": 1, "profiles": []any{map[string]any{"name": "p", "duration_s": 60, "engines": engines}}}
	}
	cases := []struct {
		name    string
		mutate  func(m map[string]any)
		want    error
		wantMsg string
	}{
		{"dotdot escape", func(m map[string]any) { eng(m)["decoder"] = "../../etc" }, models.ErrEscape, `engine name "../../etc"`},
		{"absolute path", func(m map[string]any) { eng(m)["decoder"] = "/etc/passwd" }, models.ErrEscape, "/etc/passwd"},
		{"slash", func(m map[string]any) { eng(m)["decoder"] = "a/b" }, models.ErrEscape, `"a/b"`},
		{"missing component", func(m map[string]any) { delete(eng(m), "vae_encode") }, models.ErrCorrupt, "has no vae_encode engine"},
		{"unknown component", func(m map[string]any) { eng(m)["lora"] = "x" }, models.ErrCorrupt, `unknown component "lora"`},
		{"no profiles", func(m map[string]any) { m["profiles"] = []any{} }, models.ErrCorrupt, "lists no profiles"},
		{"bad duration", func(m map[string]any) { m["profiles"].([]any)[0].(map[string]any)["duration_s"] = 999 }, models.ErrCorrupt, "outside 1..240"},
		{"schema", func(m map[string]any) { m["schema_version"] = 0 }, models.ErrMismatch, "schema_version 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := valid()
			_, err := models.ParseManifest(mustJSON(t, m))
			require.NoError(t, err)
			tc.mutate(m)
			_, err = models.ParseManifest(mustJSON(t, m))
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.wantMsg)
		})
	}
	_, err := models.ParseManifest([]byte("{"))
	require.ErrorIs(t, err, models.ErrCorrupt)
}

func eng(m map[string]any) map[string]any {
	return m["profiles"].([]any)[0].(map[string]any)["engines"].(map[string]any)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func TestOpenMissingRepository(t *testing.T) {
	_, err := models.Open(t.TempDir())
	require.ErrorIs(t, err, models.ErrNotFound)
	assert.Contains(t, err.Error(), "build one with `demond models build-reference")
}

// requireSortedKeys walks a JSON document and fails unless every object's keys are in
// ascending order.
func requireSortedKeys(t *testing.T, data []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	var walk func() // consumes one value
	walk = func() {
		tok, err := dec.Token()
		require.NoError(t, err)
		switch tok {
		case json.Delim('{'):
			prev := ""
			for dec.More() {
				k, err := dec.Token()
				require.NoError(t, err)
				key := k.(string)
				require.Less(t, prev, key, "keys out of order")
				prev = key
				walk()
			}
			_, err = dec.Token()
			require.NoError(t, err)
		case json.Delim('['):
			for dec.More() {
				walk()
			}
			_, err = dec.Token()
			require.NoError(t, err)
		}
	}
	walk()
}

// Sidecars are written as DEMON writes them: sorted keys at every level, indent 2, and they
// parse back to the same metadata.
func TestMetadataMarshalSortsKeys(t *testing.T) {
	repo := buildRepo(t, models.FootprintsRealistic)
	p := profile(t, repo)
	for _, c := range models.Components {
		data, err := os.ReadFile(filepath.Join(repo.Root(), p.Engines[c], p.Engines[c]+".engine.metadata.json"))
		require.NoError(t, err)
		requireSortedKeys(t, data)
		assert.True(t, strings.HasPrefix(string(data), "{\n  \"backend\": "), "two-space indent, first key backend: %.40q", data)
		m, err := models.ParseMetadata(data)
		require.NoError(t, err)
		again, err := m.Marshal()
		require.NoError(t, err)
		assert.Equal(t, string(data), string(again), "marshal is stable")
		if c == models.Decoder {
			assert.Contains(t, string(data), `"device_footprint_bytes": 4300000000,`, "integers are written verbatim")
		}
	}
}

func FuzzParseMetadata(f *testing.F) {
	dir := f.TempDir()
	repo, err := models.BuildReference(dir, models.BuildOptions{Profiles: []models.ProfileSpec{testProfile}, Footprints: models.FootprintsActual})
	if err != nil {
		f.Fatal(err)
	}
	p, _ := repo.Profile(testProfile.Name)
	for _, c := range models.Components {
		b, err := os.ReadFile(filepath.Join(dir, p.Engines[c], p.Engines[c]+".engine.metadata.json"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"schema_version":1,"tensors":[{"dims":[{"min":-1}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := models.ParseMetadata(data)
		if err != nil {
			if !errors.Is(err, models.ErrCorrupt) && !errors.Is(err, models.ErrMismatch) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		for _, c := range models.Components {
			_ = m.CheckContract(c, 60)
		}
		if _, err := m.Marshal(); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"schema_version":1,"profiles":[{"name":"p","duration_s":60,"engines":{"decoder":"d"}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := models.ParseManifest(data)
		if err != nil {
			return
		}
		for _, p := range m.Profiles {
			for _, n := range p.Engines {
				if strings.Contains(n, "..") || strings.ContainsAny(n, `/\`) {
					t.Fatalf("accepted escaping engine name %q", n)
				}
			}
		}
	})
}
