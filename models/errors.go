package models

import "errors"

// Errors a repository reports; each wraps one of these so callers can branch with errors.Is,
// and each message says what to do about it.
var (
	// ErrNotFound: an engine file or sidecar is missing.
	ErrNotFound = errors.New("engine not found")
	// ErrCorrupt: a file failed validation (truncated, checksum, malformed sidecar).
	ErrCorrupt = errors.New("engine corrupt")
	// ErrMismatch: a valid engine for another component, backend version or profile.
	ErrMismatch = errors.New("engine mismatch")
	// ErrUnsupported: an engine for a backend this build lacks (TensorRT without the SDK).
	ErrUnsupported = errors.New("engine backend unsupported")
	// ErrEscape: a path that leaves the repository root.
	ErrEscape = errors.New("path escapes the model repository")
)
