package daemon

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/trt/trttest"
)

func TestModelsCommands(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	code := Main([]string{"models", "build-reference", "--out", dir, "--profile", "p:10:oracle", "--footprints", "actual"}, lookup(nil), &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	assert.Contains(t, out.String(), "profile p (10 s): 6 engines")

	out.Reset()
	require.Equal(t, 0, Main([]string{"models", "check", "--models", dir}, lookup(nil), &out, &errOut))
	assert.Contains(t, out.String(), "ok   p (10 s)")

	// Corrupt an engine: check names it and fails.
	f := filepath.Join(dir, "decoder_oracle_fp32_b8_10s", "decoder_oracle_fp32_b8_10s.engine")
	require.NoError(t, os.WriteFile(f, []byte("garbage"), 0o644))
	out.Reset()
	assert.Equal(t, 1, Main([]string{"models", "check", "--models", dir}, lookup(nil), &out, &errOut))
	assert.Contains(t, out.String(), "FAIL p")
	assert.Contains(t, out.String(), "truncated or replaced")

	errOut.Reset()
	assert.Equal(t, 2, Main([]string{"models", "build-reference", "--out", dir, "--profile", "bad"}, lookup(nil), &out, &errOut))
	assert.Contains(t, errOut.String(), "NAME:SECONDS:VARIANT")
	assert.Equal(t, 2, Main([]string{"models"}, lookup(nil), &out, &errOut))

	out.Reset()
	require.Equal(t, 0, Main([]string{"version"}, lookup(nil), &out, &errOut))
	assert.Regexp(t, `^demond (v\S+|devel\S*) \(shim \S+\)\n$`, out.String(), "the version is never empty")
	assert.Contains(t, out.String(), buildVersion())
}

func TestStartFailureExitsNonZeroWithOneLine(t *testing.T) {
	var out, errOut bytes.Buffer
	code := Main([]string{"--models", t.TempDir(), "--listen", "127.0.0.1:0", "--control-listen", "", "--data-dir", t.TempDir(), "--device-capacity", "1GiB"}, lookup(nil), &out, &errOut)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut.String(), "demond: start failed: --models")
	assert.Contains(t, errOut.String(), "has no repository.json")
}

// A model load failing at boot: demond exits non-zero with one clear line naming the cause,
// after the partial load was unwound and the device ledger was back at zero.
func TestBootFailureUnwindsToZero(t *testing.T) {
	for _, point := range []string{"model.load.vae_encode", "model.place_decoder"} {
		t.Run(point, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main([]string{
				"--models", testRepo(t), "--model-profile", "test-10s", "--failpoints", point + "=error",
				"--listen", "127.0.0.1:0", "--control-listen", "", "--data-dir", t.TempDir(), "--device-capacity", "1GiB",
			}, lookup(nil), &out, &errOut)
			assert.Equal(t, 1, code)
			log := errOut.String()
			assert.Contains(t, log, "demond: start failed:")
			assert.Equal(t, 1, strings.Count(log, "fault injected at "+point), "the cause is reported once\n%s", log)
			assert.Contains(t, log, "device released; ledger at zero")
			assert.NotContains(t, log, "native memory leaked")
		})
	}
}

// A start-up that outlives --start-timeout is unwound all the same: fx's rollback runs
// with a context of its own, so every module that started is stopped and the device
// ledger is back at zero; the one error line names the option to change.
func TestStartTimeoutUnwindsToZero(t *testing.T) {
	var out, errOut bytes.Buffer
	trttest.NoLeaks(t)
	code := Main([]string{
		"--models", testRepo(t), "--model-profile", "test-10s", "--start-timeout", "150ms", "--warmup=true",
		"--listen", "127.0.0.1:0", "--control-listen", "", "--data-dir", t.TempDir(), "--device-capacity", "1GiB",
	}, lookup(nil), &out, &errOut)
	assert.Equal(t, 1, code)
	log := errOut.String()
	assert.Contains(t, log, "demond: start failed: start did not finish within --start-timeout 150ms")
	assert.Contains(t, log, "device released; ledger at zero")
	assert.NotContains(t, log, "rollback failed")
	assert.NotContains(t, log, "native memory leaked")
	assert.Equal(t, 1, strings.Count(log, "start did not finish"), log)
}

// A busy port fails start-up: demond exits non-zero with one line naming the address, after
// the modules started before the listener (device, models, warmup) were unwound.
func TestBusyPortFailsStart(t *testing.T) {
	trttest.NoLeaks(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	addr := busy.Addr().String()
	var out, errOut bytes.Buffer
	code := Main([]string{
		"--models", testRepo(t), "--model-profile", "test-10s", "--warmup=false",
		"--listen", addr, "--control-listen", "", "--data-dir", t.TempDir(), "--device-capacity", "1GiB",
	}, lookup(nil), &out, &errOut)
	assert.Equal(t, 1, code)
	log := errOut.String()
	assert.Regexp(t, `(?m)^demond: start failed: .*`+regexp.QuoteMeta(addr)+`.*address already in use$`, log)
	assert.Equal(t, 1, strings.Count(log, "address already in use"), log)
	assert.Contains(t, log, "device released; ledger at zero")
}

// Configuration errors exit 2 (deploy/demond.service does not restart on it:
// RestartPreventExitStatus=2), with the option named; --help exits 0.
func TestConfigErrorsExitTwo(t *testing.T) {
	badKey := filepath.Join(t.TempDir(), "bad.toml")
	require.NoError(t, os.WriteFile(badKey, []byte("devise = \"host\"\n"), 0o600))
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad flag value", []string{"--device", "tpu"}, nil, `demond: --device="tpu"`},
		{"bad variable", nil, map[string]string{"DEMON_STOP_TIMEOUT": "soon"}, `demond: DEMON_STOP_TIMEOUT="soon"`},
		{"unknown file key", []string{"--config", badKey}, nil, `unknown key "devise"`},
		{"missing file", []string{"--config", filepath.Join(t.TempDir(), "none.toml")}, nil, "none.toml"},
		{"unknown flag", []string{"--bogus"}, nil, "-bogus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			assert.Equal(t, 2, Main(tc.args, lookup(tc.env), &out, &errOut))
			assert.Contains(t, out.String()+errOut.String(), tc.want)
		})
	}
	var out bytes.Buffer
	assert.Equal(t, 0, Main([]string{"--help"}, lookup(nil), &out, &out))
}
