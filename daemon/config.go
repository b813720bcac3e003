package daemon

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/ws"
)

// Config is demond's whole configuration. Every field is an option with a flag, an
// environment variable (DEMON_*) and a TOML key; precedence is flag > environment >
// file (--config) > default. Later modules take the slice of it they need.
type Config struct {
	ConfigFile           string        `toml:"-"`
	Device               string        `toml:"device"`
	DeviceCapacity       ByteSize      `toml:"device_capacity"`
	DeviceOrdinal        int           `toml:"device_ordinal"`
	Failpoints           string        `toml:"failpoints"`
	LogLevel             string        `toml:"log_level"`
	LogFormat            string        `toml:"log_format"`
	StartTimeout         time.Duration `toml:"start_timeout"`
	StopTimeout          time.Duration `toml:"stop_timeout"`
	Listen               string        `toml:"listen"`
	ControlListen        string        `toml:"control_listen"`
	APIKey               string        `toml:"api_key"`
	GPUTelemetry         string        `toml:"gpu_telemetry"`
	Models               string        `toml:"models"`
	ModelProfile         string        `toml:"model_profile"`
	DataDir              string        `toml:"data_dir"`
	Warmup               bool          `toml:"warmup"`
	IdlePause            time.Duration `toml:"idle_pause"`
	TickInterval         time.Duration `toml:"tick_interval"`
	Headroom             ByteSize      `toml:"admission_headroom"`
	AdmissionDriverWait  time.Duration `toml:"admission_driver_wait"`
	AllowedOrigins       []string      `toml:"allowed_origins"`
	MaxSessionsPerClient int           `toml:"max_sessions_per_client"`
	MaxUploadBytes       ByteSize      `toml:"max_upload_bytes"`
	MaxUploadSeconds     time.Duration `toml:"max_upload_seconds"`
	MaxConcurrentUploads int           `toml:"max_concurrent_uploads"`
	WriteTimeout         time.Duration `toml:"write_timeout"`
	MinWriteRate         ByteSize      `toml:"min_write_rate"`
	TickStallTimeout     time.Duration `toml:"tick_stall_timeout"`
}

// option describes one configuration option in one place: its names, default and help.
type option struct {
	flag, env, toml, help string
	def                   func() string
	set                   func(c *Config, v string) error
}

// listOptions are the options (by TOML key) that hold a list: comma-separated values
// from flags and variables, a TOML array of strings (or one string) from the file.
var listOptions = map[string]bool{"allowed_origins": true}

func options() []option {
	return []option{
		{"config", "DEMON_CONFIG", "", "TOML configuration file (flags and DEMON_* variables override it)",
			func() string { return "" }, func(c *Config, v string) error { c.ConfigFile = v; return nil }},
		{"device", "DEMON_DEVICE", "device", "device backend: host (host memory accounted like a GPU) or cuda",
			func() string { return "host" }, func(c *Config, v string) error {
				k, err := trt.ParseDeviceKind(v)
				if err != nil {
					return err
				}
				c.Device = k.String()
				return nil
			}},
		{"device-capacity", "DEMON_DEVICE_CAPACITY", "device_capacity", "host device capacity in bytes, with units (e.g. 24GiB); default 75% of RAM",
			func() string { return defaultCapacity().String() }, positiveSizeSetter(func(c *Config, b ByteSize) { c.DeviceCapacity = b })},
		{"device-ordinal", "DEMON_DEVICE_ORDINAL", "device_ordinal", "GPU index for --device cuda",
			func() string { return "0" }, func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					return fmt.Errorf("want a GPU index >= 0, got %q", v)
				}
				c.DeviceOrdinal = n
				return nil
			}},
		{"failpoints", "DEMON_FAILPOINTS", "failpoints", "fault points to arm, e.g. model.load.decoder=error,handshake.stem_payload=error@2 (docs/faultpoints.md); off unless set",
			func() string { return "" }, func(c *Config, v string) error { c.Failpoints = v; return nil }},
		{"log-level", "DEMON_LOG_LEVEL", "log_level", "log level: debug, info, warn or error",
			func() string { return "info" }, func(c *Config, v string) error {
				switch strings.ToLower(v) {
				case "debug", "info", "warn", "error":
					c.LogLevel = strings.ToLower(v)
					return nil
				}
				return fmt.Errorf("unknown level %q (want debug, info, warn or error)", v)
			}},
		{"log-format", "DEMON_LOG_FORMAT", "log_format", "log format: text or json",
			func() string { return "text" }, func(c *Config, v string) error {
				switch strings.ToLower(v) {
				case "text", "json":
					c.LogFormat = strings.ToLower(v)
					return nil
				}
				return fmt.Errorf("unknown format %q (want text or json)", v)
			}},
		{"start-timeout", "DEMON_START_TIMEOUT", "start_timeout", "how long start-up (engine loads, warmup) may take before demond gives up",
			func() string { return "5m" }, durationSetter(func(c *Config, d time.Duration) { c.StartTimeout = d })},
		{"stop-timeout", "DEMON_STOP_TIMEOUT", "stop_timeout", "how long a graceful stop may take before demond forces exit",
			func() string { return "30s" }, durationSetter(func(c *Config, d time.Duration) { c.StopTimeout = d })},
		{"listen", "DEMON_LISTEN", "listen", "address (host:port) of the HTTP + WebSocket listener; :0 picks a free port",
			func() string { return "127.0.0.1:1318" }, func(c *Config, v string) error {
				if err := validateAddr(v); err != nil {
					return err
				}
				c.Listen = v
				return nil
			}},
		{"control-listen", "DEMON_CONTROL_LISTEN", "control_listen", "address (host:port) of the control API (protocol.md §9); \"\" or off disables it",
			func() string { return "127.0.0.1:1319" }, func(c *Config, v string) error {
				if v == "" || strings.EqualFold(v, "off") {
					c.ControlListen = ""
					return nil
				}
				if err := validateAddr(v); err != nil {
					return err
				}
				c.ControlListen = v
				return nil
			}},
		{"api-key", "DEMON_API_KEY", "api_key", "API key the control API requires (Authorization: Bearer <key> or ?apiKey=); prefer the variable or the file, flags show in ps; off unless set",
			func() string { return "" }, func(c *Config, v string) error { c.APIKey = v; return nil }},
		{"models", "DEMON_MODELS", "models", "model repository directory; empty = the built-in reference repository (CPU reference engines), built under --data-dir on first start",
			func() string { return "" }, func(c *Config, v string) error { c.Models = v; return nil }},
		{"model-profile", "DEMON_MODEL_PROFILE", "model_profile", "profile of the model repository to load (its engines serve sources up to the profile's duration)",
			func() string { return "ref-60s" }, func(c *Config, v string) error {
				if strings.TrimSpace(v) == "" {
					return errors.New("must not be empty")
				}
				c.ModelProfile = v
				return nil
			}},
		{"data-dir", "DEMON_DATA_DIR", "data_dir", "directory for user uploads and the built-in model repository",
			defaultDataDir, func(c *Config, v string) error {
				if strings.TrimSpace(v) == "" {
					return errors.New("must not be empty")
				}
				c.DataDir = v
				return nil
			}},
		{"warmup", "DEMON_STARTUP_WARMUP", "warmup", "run one synthetic session at boot before reporting ready (true/false)",
			func() string { return "true" }, func(c *Config, v string) error {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return fmt.Errorf("want true or false, got %q", v)
				}
				c.Warmup = b
				return nil
			}},
		{"idle-pause", "DEMON_IDLE_PAUSE", "idle_pause", "after this long without input changes stop the DiT, re-decode the last latent for one track length, then stop slices; resumes on the next change",
			func() string { return "20s" }, durationSetter(func(c *Config, d time.Duration) { c.IdlePause = d })},
		{"tick-interval", "DEMON_TICK_INTERVAL", "tick_interval", "minimum time between two ticks of a session (real-time pacing; sessions share the CPU/GPU)",
			func() string { return "40ms" }, durationSetter(func(c *Config, d time.Duration) { c.TickInterval = d })},
		{"admission-headroom", "DEMON_ADMISSION_HEADROOM", "admission_headroom", "device memory kept free beyond a new session's predicted cost; a start that would eat into it is refused with close 1013",
			func() string { return "256MiB" }, func(c *Config, v string) error {
				b, err := ParseByteSize(v)
				if err != nil {
					return err
				}
				c.Headroom = b
				return nil
			}},
		{"admission-driver-wait", "DEMON_ADMISSION_DRIVER_WAIT", "admission_driver_wait", "with --device cuda: how long a start the ledger admits waits for the driver to report that much free memory too (a closed session's frees land asynchronously; other processes hold memory the ledger cannot see) before it is refused with close 1013; 0 = no waiting, the driver's figure at the time decides",
			func() string { return session.DefaultConfig().DriverWait.String() }, func(c *Config, v string) error {
				d, err := time.ParseDuration(v)
				if err != nil {
					return fmt.Errorf("invalid duration %q (want e.g. 2s, 500ms)", v)
				}
				if d < 0 {
					return errors.New("must not be negative")
				}
				c.AdmissionDriverWait = d
				return nil
			}},
		{"allowed-origins", "DEMON_ALLOWED_ORIGINS", "allowed_origins", "comma-separated Origin allow-list for WebSocket upgrades (\"*\" = any; a TOML array in the file); empty = same-host pages, no-Origin clients and, on a loopback connection, loopback pages on any port (DEMON's own web client)",
			func() string { return "" }, func(c *Config, v string) error {
				c.AllowedOrigins = nil
				for _, o := range strings.Split(strings.Trim(v, "[]"), ",") {
					if o = strings.Trim(strings.TrimSpace(o), `"`); o != "" {
						c.AllowedOrigins = append(c.AllowedOrigins, o)
					}
				}
				return nil
			}},
		{"max-sessions-per-client", "DEMON_MAX_SESSIONS_PER_CLIENT", "max_sessions_per_client", "concurrent session sockets per client address (over it: close 1013); -1 = unlimited",
			func() string { return "4" }, func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n == 0 || n < -1 {
					return fmt.Errorf("want a positive number or -1, got %q", v)
				}
				c.MaxSessionsPerClient = n
				return nil
			}},
		{"max-upload-bytes", "DEMON_MAX_UPLOAD_BYTES", "max_upload_bytes", "largest PCM frame a client may send (session start, swap or upload), with units; at most 100MiB",
			func() string { return ByteSize(ws.MaxInboundMessage).String() }, func(c *Config, v string) error {
				b, err := ParseByteSize(v)
				if err != nil {
					return err
				}
				if b == 0 || b > ws.MaxInboundMessage {
					return fmt.Errorf("want 1 byte to %s, got %s", ByteSize(ws.MaxInboundMessage), b)
				}
				c.MaxUploadBytes = b
				return nil
			}},
		{"max-upload-seconds", "DEMON_MAX_UPLOAD_SECONDS", "max_upload_seconds", "uploaded tracks are cut to this duration (the engines serve at most 240 s)",
			func() string { return "4m0s" }, func(c *Config, v string) error {
				if d, err := time.ParseDuration(v); err == nil && d > 4*time.Minute {
					return fmt.Errorf("%s is longer than the engines' 4m limit", d)
				}
				return durationSetter(func(c *Config, d time.Duration) { c.MaxUploadSeconds = d })(c, v)
			}},
		{"max-concurrent-uploads", "DEMON_MAX_CONCURRENT_UPLOADS", "max_concurrent_uploads", "upload sockets receiving or storing a track at once (over it: upload_failed, close 1013); -1 = unlimited",
			func() string { return strconv.Itoa(ws.DefaultMaxConcurrentUploads) }, func(c *Config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n == 0 || n < -1 {
					return fmt.Errorf("want a positive number or -1, got %q", v)
				}
				c.MaxConcurrentUploads = n
				return nil
			}},
		{"write-timeout", "DEMON_WRITE_TIMEOUT", "write_timeout", "longest a WebSocket write may stall (a message over 64 KiB: each 64 KiB chunk, the whole within write-timeout + size/min-write-rate)",
			func() string { return ws.DefaultWriteTimeout.String() }, durationSetter(func(c *Config, d time.Duration) { c.WriteTimeout = d })},
		{"min-write-rate", "DEMON_MIN_WRITE_RATE", "min_write_rate", "slowest average rate, per second, at which a client may take a large message (the initial buffer) before it is dropped",
			func() string { return ByteSize(ws.DefaultMinWriteRate).String() }, positiveSizeSetter(func(c *Config, b ByteSize) { c.MinWriteRate = b })},
		{"tick-stall-timeout", "DEMON_TICK_STALL_TIMEOUT", "tick_stall_timeout", "a session's tick loop silent this long counts as hung: systemd's watchdog pings stop",
			func() string { return "30s" }, durationSetter(func(c *Config, d time.Duration) { c.TickStallTimeout = d })},
		{"gpu-telemetry", "DEMON_GPU_TELEMETRY", "gpu_telemetry", "GPU telemetry through NVML: auto (use it when the driver library loads) or off",
			func() string { return "auto" }, func(c *Config, v string) error {
				switch strings.ToLower(v) {
				case "auto", "off":
					c.GPUTelemetry = strings.ToLower(v)
					return nil
				}
				return fmt.Errorf("unknown mode %q (want auto or off)", v)
			}},
	}
}

// validateAddr accepts a listen address of the form host:port (host may be empty).
func validateAddr(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("invalid address %q (want host:port, e.g. 127.0.0.1:1318)", v)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("invalid port %q in %q", port, v)
	}
	return nil
}

// positiveSizeSetter parses a byte size with units that must be greater than 0.
func positiveSizeSetter(set func(*Config, ByteSize)) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := ParseByteSize(v)
		if err != nil {
			return err
		}
		if b == 0 {
			return errors.New("must be greater than 0")
		}
		set(c, b)
		return nil
	}
}

func durationSetter(set func(*Config, time.Duration)) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("invalid duration %q (want e.g. 30s, 5m)", v)
		}
		if d <= 0 {
			return errors.New("must be positive")
		}
		set(c, d)
		return nil
	}
}

// ErrHelp is returned by LoadConfig when --help was asked for (the usage was printed).
var ErrHelp = flag.ErrHelp

// LoadConfig is LoadConfigFrom for an environment read by getenv, which cannot tell a
// variable set to "" from an unset one: empty variables are ignored.
func LoadConfig(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	return LoadConfigFrom(args, func(k string) (string, bool) {
		v := getenv(k)
		return v, v != ""
	}, usage)
}

// usageHeader precedes the flag list of demond --help.
const usageHeader = `usage: demond [flags]
       demond version
       demond models build-reference|check [flags]   (demond models for help)

demond serves real-time generative-music sessions over WebSocket.

Flags (each also settable as the DEMON_* variable named, or in the --config TOML file).
A variable set to "" applies where an empty value means something (DEMON_CONTROL_LISTEN=""
disables the control API) and is ignored elsewhere:
`

// LoadConfigFrom builds the configuration from defaults, the optional TOML file, the
// environment (read by lookupEnv, e.g. os.LookupEnv) and the command-line flags, in
// increasing precedence. Errors name the option (flag and variable) so an operator knows
// what to fix.
func LoadConfigFrom(args []string, lookupEnv func(string) (string, bool), usage io.Writer) (Config, error) {
	opts := options()
	fs := flag.NewFlagSet("demond", flag.ContinueOnError)
	fs.SetOutput(usage)
	flagVals := map[string]*string{}
	for _, o := range opts {
		flagVals[o.flag] = fs.String(o.flag, o.def(), fmt.Sprintf("%s (env %s)", o.help, o.env))
	}
	fs.Usage = func() {
		fmt.Fprint(usage, usageHeader)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (see demond --help)", fs.Arg(0))
	}
	setByFlag := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { setByFlag[f.Name] = true })

	var c Config
	// Defaults first.
	for _, o := range opts {
		if err := o.set(&c, o.def()); err != nil {
			return Config{}, fmt.Errorf("default of --%s: %w", o.flag, err)
		}
	}
	// Resolve which config file to read (flag > env).
	file, _ := lookupEnv("DEMON_CONFIG")
	if setByFlag["config"] {
		file = *flagVals["config"]
	}
	if file != "" {
		if err := applyFile(&c, opts, file); err != nil {
			return Config{}, err
		}
		c.ConfigFile = file
	}
	for _, o := range opts {
		if o.flag == "config" {
			continue
		}
		v, ok := lookupEnv(o.env)
		if !ok || (v == "" && !acceptsEmpty(o)) {
			continue
		}
		if err := o.set(&c, v); err != nil {
			return Config{}, fmt.Errorf("%s=%q: %w", o.env, v, err)
		}
	}
	for _, o := range opts {
		if o.flag == "config" || !setByFlag[o.flag] {
			continue
		}
		v := *flagVals[o.flag]
		if err := o.set(&c, v); err != nil {
			return Config{}, fmt.Errorf("--%s=%q: %w", o.flag, v, err)
		}
	}
	return c, nil
}

func applyFile(c *Config, opts []option, file string) error {
	var raw map[string]any
	if _, err := toml.DecodeFile(file, &raw); err != nil {
		return fmt.Errorf("config file %s: %w", file, err)
	}
	byKey := map[string]option{}
	for _, o := range opts {
		if o.toml != "" {
			byKey[o.toml] = o
		}
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		o, ok := byKey[k]
		if !ok {
			return fmt.Errorf("config file %s: unknown key %q", file, k)
		}
		v, err := fileValue(o, raw[k])
		if err != nil {
			return fmt.Errorf("config file %s: %s: %w", file, k, err)
		}
		if err := o.set(c, v); err != nil {
			return fmt.Errorf("config file %s: %s = %q: %w", file, k, v, err)
		}
	}
	return nil
}

// acceptsEmpty reports whether "" is a value of the option (it disables the control API,
// arms no fault point, ...) rather than a mistake.
func acceptsEmpty(o option) bool { return o.set(&Config{}, "") == nil }

// fileValue renders a TOML value as the option's string form: an array of strings joins
// into the comma-separated list a list option parses; any other array is refused rather
// than flattened into one value.
func fileValue(o option, raw any) (string, error) {
	arr, ok := raw.([]any)
	if !ok {
		return fmt.Sprint(raw), nil
	}
	if !listOptions[o.toml] {
		return "", fmt.Errorf("want a single value, got an array (%v)", raw)
	}
	items := make([]string, len(arr))
	for i, item := range arr {
		str, ok := item.(string)
		if !ok || strings.Contains(str, ",") {
			return "", fmt.Errorf("array item %v: want a string without commas", item)
		}
		items[i] = str
	}
	return strings.Join(items, ","), nil
}

// defaultDataDir is $XDG_DATA_HOME/demon, ~/.local/share/demon, or ./demon-data.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "demon")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "demon")
	}
	return "demon-data"
}

// defaultCapacity is 75% of physical memory, or 8 GiB when that cannot be read: a share
// of RAM that leaves the host room while the shim maps engine footprints lazily.
func defaultCapacity() ByteSize {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 8 << 30
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err == nil {
				return ByteSize(kb * 1024 / 4 * 3)
			}
		}
	}
	return 8 << 30
}
