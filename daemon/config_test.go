package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/ws"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// lookup is an environment that tells a variable set to "" from an unset one.
func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestByteSize(t *testing.T) {
	cases := []struct {
		in   string
		want ByteSize
	}{
		{"24GiB", 24 << 30}, {"24gib", 24 << 30}, {"512MiB", 512 << 20}, {"1.5GB", 1_500_000_000},
		{"1000", 1000}, {"4k", 4096}, {" 2 TiB ", 2 << 40}, {"13500000000B", 13_500_000_000},
	}
	for _, c := range cases {
		got, err := ParseByteSize(c.in)
		require.NoError(t, err, c.in)
		assert.Equal(t, c.want, got, c.in)
	}
	for _, bad := range []string{"", "GiB", "-1GiB", "12 parsecs", "NaN", "1e30TiB"} {
		_, err := ParseByteSize(bad)
		assert.Error(t, err, bad)
	}
	assert.Equal(t, "24GiB", ByteSize(24<<30).String())
	assert.Equal(t, "1.5KiB", ByteSize(1536).String())
	assert.Equal(t, "100B", ByteSize(100).String())
}

func TestConfigDefaults(t *testing.T) {
	c, err := LoadConfig(nil, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	// The connection limits default to ws's own defaults, so demond and a bare ws.Server agree.
	assert.Equal(t, ByteSize(ws.MaxInboundMessage), c.MaxUploadBytes)
	assert.Equal(t, 4*time.Minute, c.MaxUploadSeconds)
	assert.Equal(t, ws.DefaultMaxConcurrentUploads, c.MaxConcurrentUploads)
	assert.Equal(t, ws.DefaultWriteTimeout, c.WriteTimeout)
	assert.Equal(t, ByteSize(ws.DefaultMinWriteRate), c.MinWriteRate)
	assert.Equal(t, "host", c.Device)
	assert.Positive(t, uint64(c.DeviceCapacity))
	assert.Empty(t, c.Failpoints)
	assert.Equal(t, 5*time.Minute, c.StartTimeout)
}

func TestConfigPrecedenceFlagOverEnvOverFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "demond.toml")
	require.NoError(t, os.WriteFile(file, []byte("device_capacity = \"1GiB\"\nlog_level = \"warn\"\nfailpoints = \"device.alloc=error\"\n"), 0o600))

	c, err := LoadConfig([]string{"--config", file}, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, ByteSize(1<<30), c.DeviceCapacity, "file over default")
	assert.Equal(t, "warn", c.LogLevel)

	c, err = LoadConfig([]string{"--config", file}, env(map[string]string{"DEMON_DEVICE_CAPACITY": "2GiB"}), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, ByteSize(2<<30), c.DeviceCapacity, "env over file")

	c, err = LoadConfig([]string{"--config", file, "--device-capacity", "3GiB"},
		env(map[string]string{"DEMON_DEVICE_CAPACITY": "2GiB", "DEMON_FAILPOINTS": "device.create=error"}), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, ByteSize(3<<30), c.DeviceCapacity, "flag over env")
	assert.Equal(t, "device.create=error", c.Failpoints, "env over file")

	c, err = LoadConfig(nil, env(map[string]string{"DEMON_CONFIG": file}), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "warn", c.LogLevel, "DEMON_CONFIG names the file")
}

func TestConfigErrorsNameTheOption(t *testing.T) {
	dir := t.TempDir()
	badKey := filepath.Join(dir, "bad.toml")
	require.NoError(t, os.WriteFile(badKey, []byte("devise = \"host\"\n"), 0o600))
	cases := []struct {
		name    string
		args    []string
		env     map[string]string
		wantMsg string
	}{
		{"bad device flag", []string{"--device", "tpu"}, nil, `--device="tpu": unknown device "tpu"`},
		{"bad device env", nil, map[string]string{"DEMON_DEVICE": "tpu"}, `DEMON_DEVICE="tpu"`},
		{"bad capacity", []string{"--device-capacity", "lots"}, nil, `--device-capacity="lots": invalid size`},
		{"zero capacity", nil, map[string]string{"DEMON_DEVICE_CAPACITY": "0"}, "must be greater than 0"},
		{"bad level", []string{"--log-level", "loud"}, nil, "--log-level"},
		{"bad timeout", []string{"--start-timeout", "soon"}, nil, "--start-timeout"},
		{"unknown file key", []string{"--config", badKey}, nil, `unknown key "devise"`},
		{"missing file", []string{"--config", filepath.Join(dir, "nope.toml")}, nil, "nope.toml"},
		{"stray argument", []string{"serve"}, nil, `unexpected argument "serve"`},
		{"unknown flag", []string{"--bogus"}, nil, "flag provided but not defined: -bogus"},
		{"upload over the frame limit", []string{"--max-upload-bytes", "1GiB"}, nil, `--max-upload-bytes="1GiB": want 1 byte to 100MiB`},
		{"zero write rate", nil, map[string]string{"DEMON_MIN_WRITE_RATE": "0"}, `DEMON_MIN_WRITE_RATE="0": must be greater than 0`},
		{"zero uploads", []string{"--max-concurrent-uploads", "0"}, nil, "--max-concurrent-uploads"},
		{"upload longer than the engines", []string{"--max-upload-seconds", "5m"}, nil, `--max-upload-seconds="5m": 5m0s is longer than the engines' 4m limit`},
		{"bad write timeout", []string{"--write-timeout", "-1s"}, nil, "--write-timeout"},
		{"negative driver wait", nil, map[string]string{"DEMON_ADMISSION_DRIVER_WAIT": "-1s"}, `DEMON_ADMISSION_DRIVER_WAIT="-1s": must not be negative`},
		{"bad driver wait", []string{"--admission-driver-wait", "a while"}, nil, `--admission-driver-wait="a while": invalid duration`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig(tc.args, env(tc.env), &bytes.Buffer{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantMsg)
		})
	}
}

// How long admission on a GPU waits for the driver: the session package's default, set by
// file, variable or flag (0 allowed: ask the driver once), and handed to the sessions.
func TestAdmissionDriverWaitOption(t *testing.T) {
	c, err := LoadConfig(nil, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, 2*time.Second, c.AdmissionDriverWait)
	assert.Equal(t, session.DefaultConfig().DriverWait, c.AdmissionDriverWait, "demond and a bare session.Manager agree")

	file := filepath.Join(t.TempDir(), "demond.toml")
	require.NoError(t, os.WriteFile(file, []byte("admission_driver_wait = \"5s\"\n"), 0o600))
	c, err = LoadConfig([]string{"--config", file}, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, 5*time.Second, c.AdmissionDriverWait)
	c, err = LoadConfig([]string{"--config", file}, env(map[string]string{"DEMON_ADMISSION_DRIVER_WAIT": "750ms"}), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, 750*time.Millisecond, c.AdmissionDriverWait)
	c, err = LoadConfig([]string{"--admission-driver-wait", "0"}, env(map[string]string{"DEMON_ADMISSION_DRIVER_WAIT": "750ms"}), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Zero(t, c.AdmissionDriverWait, "0: no waiting")

	c.AdmissionDriverWait = 1500 * time.Millisecond
	assert.Equal(t, 1500*time.Millisecond, (&SessionsService{cfg: c}).sessionConfig().DriverWait)
}

func TestHelpListsEveryOptionWithItsVariable(t *testing.T) {
	var out bytes.Buffer
	_, err := LoadConfig([]string{"--help"}, env(nil), &out)
	require.ErrorIs(t, err, ErrHelp)
	for _, o := range options() {
		assert.Contains(t, out.String(), "-"+o.flag)
		assert.Contains(t, out.String(), o.env)
	}
	for _, sub := range []string{"demond version", "demond models build-reference|check"} {
		assert.Contains(t, out.String(), sub, "sub-commands are listed")
	}
}

// A TOML array sets a list option item by item; an array for a single-valued option is an
// error naming the key, not a value glued together from its items.
func TestConfigFileArrays(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		f := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(f, []byte(text), 0o600))
		return f
	}
	c, err := LoadConfig([]string{"--config", write("list.toml", "allowed_origins = [\"https://a.example\", \"https://b.example\"]\n")}, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, []string{"https://a.example", "https://b.example"}, c.AllowedOrigins)

	c, err = LoadConfig([]string{"--config", write("one.toml", "allowed_origins = \"https://a.example,https://b.example\"\n")}, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, []string{"https://a.example", "https://b.example"}, c.AllowedOrigins, "a comma-separated string too")

	c, err = LoadConfig([]string{"--config", write("empty.toml", "allowed_origins = []\n")}, env(nil), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Empty(t, c.AllowedOrigins)

	for _, bad := range []struct{ name, text, want string }{
		{"scalar.toml", "log_level = [\"info\"]\n", "log_level: want a single value"},
		{"ints.toml", "allowed_origins = [1, 2]\n", "allowed_origins: array item 1"},
	} {
		_, err := LoadConfig([]string{"--config", write(bad.name, bad.text)}, env(nil), &bytes.Buffer{})
		require.Error(t, err, bad.name)
		assert.Contains(t, err.Error(), bad.want)
	}
}

// A variable set to "" applies where an empty value means something (the control API
// off, no API key) and is ignored where it would be a mistake; LoadConfig's getenv cannot
// tell it from an unset one.
func TestConfigEmptyVariables(t *testing.T) {
	file := filepath.Join(t.TempDir(), "demond.toml")
	require.NoError(t, os.WriteFile(file, []byte("api_key = \"secret\"\nallowed_origins = [\"https://a.example\"]\n"), 0o600))
	empty := map[string]string{
		"DEMON_CONFIG": file, "DEMON_CONTROL_LISTEN": "", "DEMON_API_KEY": "", "DEMON_ALLOWED_ORIGINS": "",
		"DEMON_LOG_LEVEL": "", "DEMON_DEVICE_CAPACITY": "",
	}
	c, err := LoadConfigFrom(nil, lookup(empty), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Empty(t, c.ControlListen, "DEMON_CONTROL_LISTEN=\"\" disables the control API")
	assert.Empty(t, c.APIKey, "an empty variable overrides the file")
	assert.Empty(t, c.AllowedOrigins)
	assert.Equal(t, "info", c.LogLevel, "an empty level is ignored")
	assert.Positive(t, uint64(c.DeviceCapacity))

	c, err = LoadConfigFrom(nil, lookup(map[string]string{"DEMON_CONFIG": file}), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:1319", c.ControlListen, "unset: the default")
	assert.Equal(t, "secret", c.APIKey)

	c, err = LoadConfig(nil, env(empty), &bytes.Buffer{})
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:1319", c.ControlListen, "getenv cannot say \"set\"")
}
