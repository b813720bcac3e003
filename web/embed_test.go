package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(Files(), name)
	require.NoError(t, err, name)
	require.NotEmpty(t, b, name)
	return string(b)
}

func TestEmbeddedFiles(t *testing.T) {
	for _, n := range []string{"index.html", "app.js", "audio-worklet.js", "style.css"} {
		read(t, n)
	}
	html := read(t, "index.html")
	assert.Contains(t, html, `src="app.js"`)
	assert.Contains(t, html, `href="style.css"`)
	for _, id := range []string{"start", "stop", "status", "error", "error-title", "error-message", "ttfa", "slices", "track", "file", "upload",
		"prompt-a", "prompt-b", "blend", "denoise", "seed", "depth", "wave", "level", "lateness", "send-prompt"} {
		assert.Contains(t, html, `id="`+id+`"`, id)
	}
	app := read(t, "app.js")
	assert.Contains(t, app, `"audio-worklet.js"`)
	assert.Contains(t, app, `slice_encoding: "raw"`)
	assert.Contains(t, app, "Session failed while starting — refresh the page to retry.")
	assert.Contains(t, app, "window.__demon = state")
	for _, k := range []string{"status:", "slicesReceived:", "audioContextState:", "lastError:"} {
		assert.Contains(t, app, k)
	}
	worklet := read(t, "audio-worklet.js")
	assert.Contains(t, worklet, `registerProcessor("demon-buffer"`)
	assert.Contains(t, app, `"demon-buffer"`)
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for path, ctype := range map[string]string{
		"/":                 "text/html",
		"/app.js":           "javascript",
		"/audio-worklet.js": "javascript",
		"/style.css":        "text/css",
	} {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.True(t, strings.Contains(resp.Header.Get("Content-Type"), ctype), "%s: %s", path, resp.Header.Get("Content-Type"))
		assert.NotEmpty(t, body)
	}
	resp, err := http.Get(srv.URL + "/nope.js")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
}
