//go:build asan

package session_test

// Under -asan the Go runtime's cgo and allocation accounting includes the sanitizer's own
// work, so allocation counts are not meaningful there.
const asanBuild = true
