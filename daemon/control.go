package daemon

// The control API (protocol.md §9) lets a local agent (the MCP bridge) list sessions and
// queue commands into them, on a listener separate from the public one
// (--control-listen, 127.0.0.1:1319 by default, "" to disable). It knows sessions only
// through SessionDirectory (directory.go): the registry lists them, and a command goes to
// the session's WebSocket connection, where it is applied between the browser's own
// messages and acked on the browser's socket (params and set_prompt_blend are echoed
// instead, as DEMON does).
//
// When --api-key is set every control request must carry it, as
// "Authorization: Bearer <key>" or an apiKey query parameter (the form the browser's
// WebSocket URL uses, protocol.md §1.1); RequireAPIKey is exported so the public
// WebSocket route can apply the same check.

import (
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.uber.org/fx"
)

// SessionInfo describes one live session for the control API: its id, when it started,
// and a snapshot of its settings (prompt, prompt_b, prompt_blend, duration, bpm, key,
// time_signature, fixture_name, timbre_name, timbre_strength, structure_name,
// lora_catalog, knob_values, channels, sample_rate; protocol.md §9). It is encoded as
// one flat JSON object: {"id", "started_at" (Unix seconds), ...snapshot}.
type SessionInfo struct {
	ID        string
	StartedAt time.Time
	Snapshot  map[string]any
}

// MarshalJSON encodes the info as {"id", "started_at", ...snapshot}; the snapshot cannot
// override id or started_at.
func (s SessionInfo) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(s.Snapshot)+2)
	for k, v := range s.Snapshot {
		m[k] = v
	}
	m["id"] = s.ID
	m["started_at"] = float64(s.StartedAt.UnixMicro()) / 1e6
	return json.Marshal(m)
}

// SessionDirectory is what the control API needs from the sessions module.
type SessionDirectory interface {
	// List returns the live sessions (any order; the API sorts newest first).
	List() []SessionInfo
	// Get returns the session with the given id.
	Get(id string) (SessionInfo, bool)
	// Send queues a command into the session's receive loop: cmd is one JSON message of
	// the browser protocol, pcm the optional PCM frame that follows it (nil if none;
	// protocol.md §2). It returns an error wrapping ErrSessionNotFound for an unknown
	// session and ErrBadCommand for a command the session rejects; any other error is
	// reported as a server error.
	Send(id string, cmd []byte, pcm []byte) error
}

// ErrSessionNotFound is returned (wrapped) by SessionDirectory.Send for an unknown id.
var ErrSessionNotFound = errors.New("session not found")

// ErrBadCommand is returned (wrapped) by SessionDirectory.Send for a command the session
// rejects as malformed.
var ErrBadCommand = errors.New("bad command")

// sessionIDPattern is protocol.md §9's session id syntax.
var sessionIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidSessionID reports whether id is a well-formed session id ([A-Za-z0-9_-]{1,64}).
func ValidSessionID(id string) bool { return sessionIDPattern.MatchString(id) }

// maxCommandBytes bounds a command body: the JSON plus one PCM frame of 240 s of stereo
// float32 fits (the WebSocket's own limit is 100 MiB, protocol.md §2).
const maxCommandBytes = 100 << 20

// Control is the control API listener (--control-listen / DEMON_CONTROL_LISTEN).
type Control struct {
	dir     SessionDirectory
	log     *slog.Logger
	handler http.Handler
	l       *httpListener // nil when disabled
}

// ControlParams are NewControl's dependencies.
type ControlParams struct {
	fx.In
	Config    Config
	Log       *slog.Logger
	LC        fx.Lifecycle
	Directory SessionDirectory
}

// NewControl builds the control API and registers its listener's lifecycle (none when
// --control-listen is empty); nothing is bound here.
func NewControl(p ControlParams) *Control {
	c := &Control{dir: p.Directory, log: p.Log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /sessions", c.list)
	mux.HandleFunc("GET /sessions/{id}", c.get)
	mux.HandleFunc("POST /sessions/{id}/cmd", c.cmd)
	var h http.Handler = mux
	if p.Config.APIKey != "" {
		h = RequireAPIKey(p.Config.APIKey, h)
	}
	c.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setNoStore(w)
		h.ServeHTTP(w, r)
	})
	if p.Config.ControlListen == "" {
		p.LC.Append(fx.StartHook(func() { p.Log.Info("control API disabled (--control-listen is empty)") }))
		return c
	}
	c.l = newHTTPListener(p.Log, "control", "the control API", p.Config.ControlListen, "--control-listen / DEMON_CONTROL_LISTEN", c.handler)
	p.LC.Append(fx.StartStopHook(c.l.start, c.l.stop))
	return c
}

// Handler returns the control API handler (API-key check included), for tests.
func (c *Control) Handler() http.Handler { return c.handler }

// URL returns the control listener's base URL ("" when disabled or not started).
func (c *Control) URL() string {
	if c.l == nil {
		return ""
	}
	return c.l.URL()
}

func (c *Control) list(w http.ResponseWriter, _ *http.Request) {
	ss := slices.Clone(c.dir.List())
	slices.SortStableFunc(ss, func(a, b SessionInfo) int { return b.StartedAt.Compare(a.StartedAt) })
	if ss == nil {
		ss = []SessionInfo{}
	}
	writeJSON(w, http.StatusOK, ss)
}

// sessionID returns the path's session id, or writes a 400 and returns false.
func sessionID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !ValidSessionID(id) {
		writeError(w, http.StatusBadRequest, "invalid session id (want [A-Za-z0-9_-]{1,64})")
		return "", false
	}
	return id, true
}

func (c *Control) get(w http.ResponseWriter, r *http.Request) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	s, ok := c.dir.Get(id)
	if !ok {
		writeError(w, http.StatusNotFound, "session not found: "+id)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (c *Control) cmd(w http.ResponseWriter, r *http.Request) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCommandBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("command body over %d bytes", tooBig.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	cmd, pcm, err := ParseCommand(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := c.dir.Send(id, cmd, pcm); err != nil {
		switch {
		case errors.Is(err, ErrSessionNotFound):
			writeError(w, http.StatusNotFound, err.Error())
		case errors.Is(err, ErrBadCommand):
			writeError(w, http.StatusBadRequest, err.Error())
		default:
			c.log.Error("control command failed", "session", id, "err", err)
			writeError(w, http.StatusInternalServerError, err.Error())
		}
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sent": true, "session_id": id, "audio_bytes": len(pcm)})
}

// ParseCommand splits a control command body (protocol.md §9): a u32 LE length, that many
// bytes of JSON (one object), then optionally a PCM frame (u32 LE channels, u32 LE
// samples, channels×samples float32 LE; protocol.md §2). pcm is nil when absent.
func ParseCommand(body []byte) (cmd, pcm []byte, err error) {
	if len(body) < 4 {
		return nil, nil, errors.New("body too short: want a u32 LE JSON length first")
	}
	n := uint64(binary.LittleEndian.Uint32(body))
	if n > uint64(len(body)-4) {
		return nil, nil, fmt.Errorf("JSON length %d exceeds the %d bytes that follow it", n, len(body)-4)
	}
	cmd = body[4 : 4+n]
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(cmd, &obj); err != nil {
		return nil, nil, fmt.Errorf("command is not a JSON object: %v", err)
	}
	rest := body[4+n:]
	if len(rest) == 0 {
		return cmd, nil, nil
	}
	if len(rest) < 8 {
		return nil, nil, fmt.Errorf("PCM frame of %d bytes is shorter than its 8-byte header", len(rest))
	}
	ch := uint64(binary.LittleEndian.Uint32(rest))
	samples := uint64(binary.LittleEndian.Uint32(rest[4:]))
	if ch == 0 {
		return nil, nil, errors.New("PCM frame with 0 channels")
	}
	if want := ch * samples * 4; want != uint64(len(rest)-8) {
		return nil, nil, fmt.Errorf("PCM frame header says %d channels × %d samples (%d bytes) but carries %d bytes", ch, samples, want, len(rest)-8)
	}
	return cmd, rest, nil
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// RequireAPIKey wraps h so that it answers 401 unless the request carries key as
// "Authorization: Bearer <key>" or in the apiKey query parameter. The comparison is
// constant-time.
func RequireAPIKey(key string, h http.Handler) http.Handler {
	want := []byte(key)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.URL.Query().Get("apiKey")
		if a := r.Header.Get("Authorization"); a != "" {
			if scheme, tok, ok := strings.Cut(a, " "); ok && strings.EqualFold(scheme, "Bearer") {
				got = strings.TrimSpace(tok)
			}
		}
		if got == "" || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="demond"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong API key")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// ControlModule provides the control API listener. It needs a SessionDirectory (the web
// module provides it).
var ControlModule = fx.Module("control",
	fx.Provide(NewControl),
	fx.Invoke(func(*Control) {}),
)
