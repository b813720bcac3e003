package daemon

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"
	"go.uber.org/goleak"

	"github.com/demon-audio/demon/trt/trttest"
)

// TestMain checks that no test in the package leaves a goroutine behind (listeners,
// watchdog pingers, timeout extenders).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serviceConfig is testConfig with the listeners on free ports and NVML off, so tests do
// not collide with a running demond or with each other.
func serviceConfig(t *testing.T, args ...string) Config {
	t.Helper()
	return testConfig(t, append([]string{"--listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0", "--gpu-telemetry", "off"}, args...)...)
}

// syncBuffer is a log sink safe for the server goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type upgradeFake struct{}

func (upgradeFake) Pattern() string         { return "" }
func (upgradeFake) UpgradeProtocol() string { return "demon-test" }
func (upgradeFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.WriteString(w, "upgrade "+r.URL.Path)
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func TestServerServesRoutesAndShutsDownOnStop(t *testing.T) {
	trttest.NoLeaks(t)
	var logs syncBuffer
	release := make(chan struct{})
	entered := make(chan struct{})
	var srv *Server
	app := fxtest.New(t, Modules(serviceConfig(t), slog.New(slog.NewTextHandler(&logs, nil))),
		fx.Provide(
			AsRoute(func() Route {
				return RouteFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.WriteString(w, "hello "+r.PathValue("name"))
				})
			}),
			AsRoute(func() Route {
				return RouteFunc("GET /slow", func(w http.ResponseWriter, _ *http.Request) {
					close(entered)
					<-release
					_, _ = io.WriteString(w, "done")
				})
			}),
			AsRoute(func() upgradeFake { return upgradeFake{} }),
		),
		fx.Populate(&srv))
	app.RequireStart()
	base := srv.URL()
	require.True(t, strings.HasPrefix(base, "http://127.0.0.1:"), base)
	assert.Contains(t, logs.String(), "serving the page (open it in a browser), session sockets and /metrics on "+base, "the start-up line names the page's URL")

	resp, body := get(t, base+"hello/demon")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "hello demon", body)
	assert.Equal(t, "no-store, must-revalidate", resp.Header.Get("Cache-Control"))

	resp, body = get(t, base+"nope")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	assert.Equal(t, "404 not found", strings.TrimSpace(body))
	assert.Equal(t, "no-store, must-revalidate", resp.Header.Get("Cache-Control"))

	// The upgrade route claims upgrade requests on any path, including known ones.
	for _, path := range []string{"", "hello/x", "any/where"} {
		_, body = get(t, base+path, "Upgrade", "Demon-Test", "Connection", "Upgrade")
		assert.Equal(t, "upgrade /"+path, body)
	}

	// Stop waits for the in-flight request, then closes the listener.
	slow := make(chan string)
	go func() {
		_, b := get(t, base+"slow")
		slow <- b
	}()
	<-entered
	stopped := make(chan struct{})
	go func() { app.RequireStop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stop returned while a request was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	assert.Equal(t, "done", <-slow)
	<-stopped
	_, err := http.Get(base + "hello/again")
	require.Error(t, err, "listener still open after stop")
	assert.Empty(t, srv.URL())
}

func TestServerBusyPortFailsStartNamingTheAddress(t *testing.T) {
	trttest.NoLeaks(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	addr := busy.Addr().String()
	app := fx.New(Modules(serviceConfig(t, "--listen", addr), slog.New(slog.DiscardHandler)), fx.NopLogger)
	err = app.Start(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot listen on "+addr)
	assert.Contains(t, err.Error(), "--listen / DEMON_LISTEN")
	// fx has stopped the modules that started (the device among them).
}

func TestControlBusyPortFailsStartAndUnwindsTheServer(t *testing.T) {
	trttest.NoLeaks(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	addr := busy.Addr().String()
	var srv *Server
	app := fx.New(Modules(serviceConfig(t, "--control-listen", addr), slog.New(slog.DiscardHandler)), fx.NopLogger, fx.Populate(&srv))
	err = app.Start(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "control listener: cannot listen on "+addr)
	assert.Nil(t, srv.Addr(), "the public listener was closed by the rollback")
}

func TestRouterRejectsConflicts(t *testing.T) {
	ok := func(http.ResponseWriter, *http.Request) {}
	cases := []struct {
		name    string
		routes  []Route
		wantMsg string
	}{
		{"duplicate pattern", []Route{RouteFunc("GET /a", ok), RouteFunc("GET /a", ok)}, `route "GET /a"`},
		{"two handlers for one upgrade protocol", []Route{upgradeFake{}, upgradeFake{}}, `upgrade protocol "demon-test" is already claimed`},
		{"empty pattern", []Route{RouteFunc("", ok)}, "empty pattern"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newRouter(slog.New(slog.DiscardHandler), tc.routes)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantMsg)
		})
	}
}

func TestRouterMethodMismatchIs405(t *testing.T) {
	h, err := newRouter(slog.New(slog.DiscardHandler), []Route{RouteFunc("GET /a", func(http.ResponseWriter, *http.Request) {})})
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/a", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
	assert.Equal(t, "no-store, must-revalidate", rec.Header().Get("Cache-Control"))
}

// rawGet sends the request line exactly as written (no client-side path cleaning) and
// does not follow redirects.
func rawGet(t *testing.T, base, path string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base, nil)
	require.NoError(t, err)
	req.URL.Opaque = path
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

// TestServerRefusesPathEscapesWith404: demond's real routes (the protocol server behind
// the router) answer paths that try to leave the fixtures or uploads folder with 404 and a
// log line, never with ServeMux's redirect to the cleaned path.
func TestServerRefusesPathEscapesWith404(t *testing.T) {
	trttest.NoLeaks(t)
	var logs syncBuffer
	var srv *Server
	app := fxtest.New(t, Modules(serviceConfig(t), slog.New(slog.NewTextHandler(&logs, nil))), fx.Populate(&srv))
	app.RequireStart()
	defer app.RequireStop()
	base := strings.TrimSuffix(srv.URL(), "/")

	for _, p := range []string{
		"/fixtures/../x", "/user_uploads/../../etc/passwd", "/fixtures//x", "/fixtures/./x",
		"/user_uploads/..%2F..%2Fetc%2Fpasswd", "/fixtures/%2E%2E/healthz", "/api/../healthz", "//etc/passwd",
		"/fixtures/a%2fb", "/user_uploads/%2Fetc%2Fpasswd", "/fixtures/nothere.wav",
	} {
		resp, body := rawGet(t, base+"/", p)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, p)
		assert.Empty(t, resp.Header.Get("Location"), p)
		assert.Equal(t, "404 not found", strings.TrimSpace(body), p)
	}
	assert.Contains(t, logs.String(), "refused non-canonical request path")
	assert.Contains(t, logs.String(), `path=/user_uploads/..%2F..%2Fetc%2Fpasswd`)
	assert.Contains(t, logs.String(), "refused track path", "encoded slashes reach the protocol server's own check")

	// Canonical paths are served as before.
	resp, body := rawGet(t, base+"/", "/api/fixtures")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, body, ".wav")
	resp, _ = rawGet(t, base+"/", "/healthz")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}
