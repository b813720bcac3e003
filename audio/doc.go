// Package audio holds demon's PCM utilities: float16 conversion for the wire,
// WAV reading and writing, the source normalisation of protocol.md §3.2, and
// the deterministic demo tracks the daemon bundles.
//
// The package has no dependencies beyond the standard library and no global
// mutable state; every function is safe for concurrent use.
package audio
