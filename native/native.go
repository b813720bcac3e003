// Package native holds the C++ shim's sources (native/src, native/include).
//
// It exists for the Go build cache: cgo hashes only files inside the package that
// compiles them, so edits under native/ would otherwise leave "ok (cached)" test results
// and stale binaries. Embedding the sources here and importing this package blank from
// the cgo package (trt) makes every edit under native/ a change Go sees.
package native

import "embed"

// Sources is the shim's source tree, embedded only so that the build cache tracks it.
//
//go:embed src include
var Sources embed.FS
