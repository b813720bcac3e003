// Package session runs demon's streaming sessions: a transactional create that releases
// everything it acquired if any step fails, the run loop that owns a session once it has
// started, a registry of live sessions and admission by device memory. It is the seam the
// WebSocket protocol (package ws) drives; it knows nothing about sockets.
//
// Ownership, layer by layer (spec/lifecycle.md §2.1):
//   - Create owns every acquisition through a rollback stack, and hands them to the
//     Session only once the Session exists (commit).
//   - From Create returning until the run loop starts, the caller's handshake guard owns
//     closing the session (and unregistering it, if it registered it).
//   - Once Run is entered, Run's deferred Close is the sole owner.
//   - Close is idempotent: stop accepting commands, then stream, then engine session.
package session

import (
	"errors"
	"io"
	"log/slog"
	"time"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// Errors callers map to client-visible outcomes.
var (
	// ErrAdmission: the device has no room for another session now (close 1013).
	ErrAdmission = errors.New("GPU full, try again")
	// ErrBadRequest: the request itself is invalid (bad source, prompt too long).
	ErrBadRequest = errors.New("bad session request")
	// ErrClosed: the session is closed.
	ErrClosed = errors.New("session closed")
	// ErrShuttingDown: the manager no longer admits sessions.
	ErrShuttingDown = errors.New("server shutting down")
)

// Config tunes sessions.
type Config struct {
	MaxDepth      int           // ring capacity (depth may change up to it)
	Steps         int           // denoising steps
	Shift         float32       // default timestep shift
	MaxCondLen    int           // longest prompt in tokens
	VAEWindow     float32       // kept slice seconds
	LeadS         float32       // decode lead, seconds
	Headroom      uint64        // device bytes kept free beyond a session's predicted cost
	IdlePause     time.Duration // idle-pause after this long without input changes (0: never; see IdleDecodeFor)
	TickInterval  time.Duration // minimum time between ticks (real-time pacing)
	CloseTimeout  time.Duration // how long Close waits for the run loop to quiesce
	SliceEncoding string        // unused here; kept for symmetry with the wire config

	// IdleDecodeFor is stage 1 of the idle pause (protocol.md §4, lifecycle.md §6.3): once
	// IdlePause passes without input changes the DiT stops and the run loop keeps
	// re-decoding the last latent at the playhead for this long; then decoding stops too,
	// until the next change. 0 means one buffer duration (the session's track length, as
	// DEMON does): one sweep of the client's playhead over the whole loop, so the buffer it
	// keeps playing is the last latent's audio throughout. Tests shorten it.
	IdleDecodeFor time.Duration

	// NoAdmission admits every start whatever its predicted cost, so one that does not fit
	// fails with the device's out-of-memory error instead of ErrAdmission (diagnostics, and
	// the incident test: without the handshake guard a retry must then hit a real OOM).
	NoAdmission bool

	// DriverWait bounds how long admission on a GPU (trt.DeviceCUDA) waits for the driver
	// to agree with the ledger: once the ledger admits a session, the driver's free memory
	// (cuMemGetInfo) must also hold its cost plus Headroom. It may not yet: frees land
	// asynchronously (a closed session's memory comes back at stream sync), and the CUDA
	// context and other processes hold memory the ledger does not see. Admission polls the
	// driver until it agrees or DriverWait passes, then refuses (ErrAdmission). 0: no
	// waiting, the driver's figure at the time decides. Ignored on the host device and with NoAdmission.
	DriverWait time.Duration
}

// DefaultConfig returns the defaults demond uses.
func DefaultConfig() Config {
	return Config{
		MaxDepth: 8, Steps: 8, Shift: 3, MaxCondLen: 128, VAEWindow: 0.36, LeadS: 0.5,
		Headroom: 256 << 20, IdlePause: 20 * time.Second, TickInterval: 40 * time.Millisecond,
		CloseTimeout: 10 * time.Second, DriverWait: 2 * time.Second,
	}
}

// Hooks let the daemon observe sessions (metrics, liveness) without this package
// importing it. Every field is optional.
type Hooks struct {
	// Started is called when a session is ready, with the create latency.
	Started func(id string, latency time.Duration)
	// Failed is called for each failed create, with its error (FailureWindow and
	// ErrorWindow label it); not for refusals or creates cut short by shutdown.
	Failed func(err error)
	// Refused is called for each admission refusal.
	Refused func()
	// Ended is called when a session is closed.
	Ended func(id string)
	// Tick is called after each tick of a run loop.
	Tick func(tickMs, decMs float64, decoded bool)
	// Heartbeat returns a liveness heartbeat for a run loop (Beat each iteration, Close at
	// the end); nil means none.
	Heartbeat func(name string) Heartbeat
}

// Heartbeat is a run loop's liveness signal.
type Heartbeat interface {
	Beat()
	Close()
}
