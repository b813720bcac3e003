// Package web embeds demon's browser page: a plain ES-module app with an
// AudioWorklet player, no build step. Serve Handler() at the site root on the
// daemon's HTTP/WS port (API routes and the WebSocket upgrade take
// precedence).
//
// The page speaks DEMON's session protocol and adds one config key,
// "slice_encoding":"raw", asking for RAW float16 slices so that it needs no
// zstd decoder.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Files returns the page's files at the root of the FS: index.html, app.js,
// audio-worklet.js and style.css.
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // unreachable: the directory is embedded at build time
	}
	return sub
}

// Handler serves Files() with correct JavaScript MIME types and
// Cache-Control: no-cache (the files are small and change with the binary).
func Handler() http.Handler {
	fsrv := http.FileServerFS(Files())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if w.Header().Get("Cache-Control") == "" { // the server's own policy wins
			w.Header().Set("Cache-Control", "no-cache")
		}
		fsrv.ServeHTTP(w, r)
	})
}
