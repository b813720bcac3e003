package ws

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/demon-audio/demon/audio"
	"github.com/demon-audio/demon/web"
)

// HTTP routes (protocol.md §1.2). Routing looks at the escaped path only
// (never the method or query) and is done by hand, not by http.ServeMux, so
// that a path such as /fixtures/..%2Fetc is seen as written: track names that
// try to escape (separators, "..", encoded slashes or backslashes, absolute
// paths) get 404 and a log line, and a name is served only if it is in the
// known list.

var timeNow = time.Now

func webPage() http.Handler { return web.Handler() }

// ServeRoutes serves the HTTP API, fixtures, uploads and the page.
func (s *Server) ServeRoutes(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store, must-revalidate")
	h.Set("Pragma", "no-cache")
	h.Set("Expires", "0")
	h.Set("Permissions-Policy", "midi=*")
	p := r.URL.EscapedPath()
	switch {
	case p == "/api/fixtures":
		writeJSONBody(w, s.fixtures.Names())
	case p == "/api/server-info":
		h.Set("Access-Control-Allow-Origin", "*")
		var warm *WarmupStatus
		if s.opts.Warmup != nil {
			warm = s.opts.Warmup()
		}
		names := slices.Concat(s.fixtures.Names(), s.uploads.Names())
		slices.Sort(names)
		writeJSONBody(w, map[string]any{
			"no_backend": s.mgr == nil, "kiosk": false, "default_mode": "graph",
			"warmup": warm, "server_side_fixtures": slices.Compact(names),
		})
	case p == "/api/loras":
		checkpoint := ""
		if s.mgr != nil && s.mgr.Model() != nil {
			checkpoint = s.mgr.Model().Profile.Name
		}
		writeJSONBody(w, map[string]any{"dir": "", "extra_dirs": []string{}, "checkpoint": checkpoint,
			"checkpoint_scale": nil, "loras": LoRACatalogEntries{}})
	case p == "/api/user_uploads":
		if !s.authorized(r) {
			http.Error(w, "401 unauthorized", http.StatusUnauthorized)
			return
		}
		writeJSONBody(w, s.uploads.Names())
	case strings.HasPrefix(p, "/fixtures/"):
		name, ok := s.trackName(r, strings.TrimPrefix(p, "/fixtures/"))
		if !ok || !slices.Contains(s.fixtures.Names(), name) {
			notFound(w)
			return
		}
		pcm, err := s.fixtures.Load(name)
		if err != nil {
			http.Error(w, "500 "+err.Error(), http.StatusInternalServerError)
			return
		}
		var b bytes.Buffer
		if err := audio.EncodeWAV(&b, pcm, 2, audio.SampleRate, audio.WAVPCM16); err != nil {
			http.Error(w, "500 "+err.Error(), http.StatusInternalServerError)
			return
		}
		h.Set("Content-Type", "audio/x-wav")
		_, _ = w.Write(b.Bytes())
	case strings.HasPrefix(p, "/user_uploads/"):
		if !s.authorized(r) {
			http.Error(w, "401 unauthorized", http.StatusUnauthorized)
			return
		}
		name, ok := s.trackName(r, strings.TrimPrefix(p, "/user_uploads/"))
		file := ""
		if ok {
			file = s.uploads.path(name)
		}
		if file == "" {
			notFound(w)
			return
		}
		data, err := os.ReadFile(file)
		if err != nil {
			http.Error(w, "500 "+err.Error(), http.StatusInternalServerError)
			return
		}
		h.Set("Content-Type", "audio/x-wav")
		_, _ = w.Write(data)
	case strings.HasPrefix(p, "/api/"), strings.HasPrefix(p, "/loras/"), strings.HasPrefix(p, "/videos/"):
		notFound(w)
	case p == "/" || pageFile(p):
		s.page.ServeHTTP(w, r)
	default:
		notFound(w)
	}
}

// pageFile reports whether p names a file of the embedded page.
func pageFile(p string) bool {
	name := strings.TrimPrefix(p, "/")
	if name == "" || strings.Contains(name, "..") {
		return false
	}
	st, err := fs.Stat(web.Files(), name)
	return err == nil && !st.IsDir()
}

// trackName decodes the last path segment of a track URL, refusing anything
// that could escape its folder (logged).
func (s *Server) trackName(r *http.Request, escaped string) (string, bool) {
	lower := strings.ToLower(escaped)
	bad := escaped == "" || strings.Contains(escaped, "/") || strings.Contains(escaped, `\`) ||
		strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%00")
	name, err := url.PathUnescape(escaped)
	if bad || err != nil || !validName(name) {
		s.log.Warn("refused track path", "path", r.URL.EscapedPath(), "remote", r.RemoteAddr)
		return "", false
	}
	return name, true
}

func notFound(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write([]byte("404 not found"))
}

func writeJSONBody(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "500 "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(b)
}
