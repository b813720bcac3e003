//go:build !asan

// Not in the -asan pass, like every test that loads the fake driver (see trt/cuda_test.go).

package trttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt"
)

func TestGPUEvidence(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	none := func(string) bool { return false }
	assert.Empty(t, gpuEvidence(env(nil), none, ""))
	assert.Empty(t, gpuEvidence(env(map[string]string{RequireGPUEnv: "0"}), none, "No devices were found\n"))
	assert.Equal(t, "$DEMON_REQUIRE_GPU=1", gpuEvidence(env(map[string]string{RequireGPUEnv: "1"}), none, ""))
	assert.Equal(t, "/dev/nvidia0 exists", gpuEvidence(env(nil), func(p string) bool { return p == "/dev/nvidia0" }, ""))
	assert.Equal(t, "nvidia-smi -L lists GPU 0: NVIDIA H200 (UUID: GPU-1234)",
		gpuEvidence(env(nil), none, "GPU 0: NVIDIA H200 (UUID: GPU-1234)\n"))
}

// createErr creates a cuda device with the driver library at lib (and the fake's
// configuration in env) and returns the error.
func createErr(t *testing.T, lib string, ordinal int, env map[string]string) error {
	t.Helper()
	t.Setenv(trt.CUDALibraryEnv, lib)
	for k, v := range env {
		t.Setenv(k, v)
	}
	d, err := trt.NewDevice(trt.DeviceOptions{Kind: trt.DeviceCUDA, Ordinal: ordinal})
	if err == nil {
		_ = d.Close()
	}
	return err
}

// Only "no CUDA here" may skip the gpu tier, and not even that on a machine with a GPU.
func TestGPUTierVerdict(t *testing.T) {
	NoLeaks(t)
	fake := FakeCUDA(t, FakeCUDAOptions{})
	// A library that loads but is not a usable driver: it exports cuInit only.
	broken := filepath.Join(t.TempDir(), "libbrokencuda.so")
	src := filepath.Join(t.TempDir(), "broken.c")
	require.NoError(t, os.WriteFile(src, []byte("int cuInit(unsigned f) { return f; }\n"), 0o644))
	out, err := exec.Command("cc", "-shared", "-fPIC", "-o", broken, src).CombinedOutput()
	require.NoError(t, err, string(out))

	noDriver := createErr(t, "/nonexistent/libcuda.so.1", 0, nil)
	noDevice := createErr(t, fake, 0, map[string]string{"DEMON_FAKE_CUDA_NO_DEVICE": "1"})
	badOrdinal := createErr(t, fake, 3, map[string]string{"DEMON_FAKE_CUDA_NO_DEVICE": ""})
	missingEntry := createErr(t, broken, 0, nil)
	for _, err := range []error{noDriver, noDevice, badOrdinal, missingEntry} {
		require.Error(t, err)
	}
	assert.True(t, trt.CUDAUnavailable(noDriver), "%v", noDriver)
	assert.True(t, trt.CUDAUnavailable(noDevice), "%v", noDevice)
	assert.False(t, trt.CUDAUnavailable(badOrdinal), "%v", badOrdinal)
	assert.False(t, trt.CUDAUnavailable(missingEntry), "%v", missingEntry)

	const gpu = "nvidia-smi -L lists GPU 0: NVIDIA H200"
	for _, tc := range []struct {
		name      string
		err       error
		desc      string
		allowFake bool
		evidence  string
		wantSkip  bool
		wantMsg   string
	}{
		{"no driver, no GPU", noDriver, "", false, "", true, "no GPU for the gpu tier: create device: no CUDA driver"},
		{"no driver on a GPU machine", noDriver, "", false, gpu, false, "so the gpu tier must run"},
		{"no CUDA device, no GPU", noDevice, "", false, "", true, "CUDA_ERROR_NO_DEVICE"},
		{"no CUDA device on a GPU machine", noDevice, "", false, "/dev/nvidia0 exists", false, "/dev/nvidia0 exists"},
		{"broken driver", missingEntry, "", false, "", false, "lacks the entry point"},
		{"unknown ordinal", badOrdinal, "", false, "", false, "cuda device 3 does not exist"},
		{"the fake, not allowed", nil, "cuda:0 FAKE CUDA device", false, "", true, "needs the real CUDA driver"},
		{"the fake on a GPU machine", nil, "cuda:0 FAKE CUDA device", false, gpu, false, "needs the real CUDA driver"},
		{"the fake, allowed", nil, "cuda:0 FAKE CUDA device", true, gpu, false, ""},
		{"a GPU", nil, "cuda:0 NVIDIA H200", false, gpu, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, skip := gpuTierVerdict(tc.err, tc.desc, tc.allowFake, tc.evidence)
			assert.Equal(t, tc.wantSkip, skip)
			if tc.wantMsg == "" {
				assert.Empty(t, msg, "the tier runs")
			} else {
				assert.Contains(t, msg, tc.wantMsg)
			}
		})
	}
}
