//go:build browser

// Browser check of the embedded page against the REAL server: ws.Server on
// a session.Manager with reference engines (oracle decoder, 10 s profile) on
// a host device. The page starts a session, plays the echoed buffer in an
// AudioWorklet, applies RAW slices, and shows the exact start-failure text
// when a fault point fails the start. Needs Chromium (make test-browser
// installs Debian's):
//
//	go test -tags browser -count=1 ./web
//
// CHROMIUM=/path/to/chromium overrides the binary lookup.
package web_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/demon-audio/demon/audio"
	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
	"github.com/demon-audio/demon/ws"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// realServer serves the page and the protocol from a real ws.Server. faults
// arms fault points (e.g. "create.conditioning=error"); pcmMode hides the
// server-side fixtures so the page downloads the track and uploads its PCM.
func realServer(t *testing.T, faults string, pcmMode bool) (*httptest.Server, *session.Manager, *trt.Device, trt.Ledger) {
	t.Helper()
	trttest.NoLeaks(t)
	f := trttest.Faults(t, faults)
	dev := trttest.HostDevice(t, 16<<30, f)
	repo, err := models.BuildReference(t.TempDir(), models.BuildOptions{
		Profiles:   []models.ProfileSpec{{Name: "ref-10s", DurationS: 10, DecoderVariant: "oracle"}},
		Footprints: models.FootprintsActual})
	if err != nil {
		t.Fatal(err)
	}
	p, err := repo.Profile("ref-10s")
	if err != nil {
		t.Fatal(err)
	}
	model, err := models.LoadModel(dev, repo, p, models.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(model.Release)
	base := trttest.Snapshot(t, dev)
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	mgr := session.NewManager(session.DefaultConfig(), dev, model, f, log, session.Hooks{})
	srv, err := ws.NewServer(ws.Options{Manager: mgr, Log: log, UploadsDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	if pcmMode {
		inner := h
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/api/server-info" {
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(`{"server_side_fixtures":[]}`))
				return
			}
			inner.ServeHTTP(w, r)
		})
	}
	hs := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx, websocket.CloseGoingAway); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
		if err := mgr.WaitIdle(ctx); err != nil {
			t.Errorf("sessions still open: %v", err)
		}
	})
	return hs, mgr, dev, base
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

func browser(t *testing.T) (context.Context, context.CancelFunc) {
	path := os.Getenv("CHROMIUM")
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "/usr/lib/chromium/chromium-headless-shell"} {
		if path != "" {
			break
		}
		path, _ = exec.LookPath(name)
	}
	if path == "" {
		// make test installs chromium and sets DEMON_REQUIRE_BROWSER, so there a missing
		// browser is a failure, not a quiet skip.
		if os.Getenv("DEMON_REQUIRE_BROWSER") != "" {
			t.Fatal("no chromium found (set CHROMIUM) and DEMON_REQUIRE_BROWSER is set")
		}
		t.Skip("no chromium (set CHROMIUM)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true), chromedp.UserDataDir(t.TempDir()))
	actx, c1 := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, c2 := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	ctx, c3 := context.WithTimeout(ctx, 60*time.Second)
	return ctx, func() { c3(); c2(); c1() }
}

func TestPagePlays(t *testing.T) { pagePlays(t, false) }

func pagePlays(t *testing.T, pcmMode bool) {
	srv, mgr, _, _ := realServer(t, "", pcmMode)
	ctx, cancel := browser(t)
	defer cancel()
	err := chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible("#start"),
		chromedp.Poll[chromedp.Void](`document.querySelector("#track").value !== ""`),
		chromedp.Click("#start"),
		chromedp.Poll[chromedp.Void](`window.__demon.status === "playing" && window.__demon.slicesReceived >= 2`, chromedp.WithPollingTimeout(30*time.Second)),
	)
	if err != nil {
		t.Fatal(err)
	}
	st, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]any](`({status: __demon.status, slices: __demon.slicesReceived, ctx: __demon.audioContextState, err: __demon.lastError, ttfa: __demon.ttfaMs, late: __demon.lateSlices, pos: __demon.playheadSec, lead: document.querySelector("#lateness").textContent, level: document.querySelector("#level").textContent})`))
	if err != nil {
		t.Fatal(err)
	}
	ttfa, _ := chromedp.Run(ctx, chromedp.Text("#ttfa"))
	slices, _ := chromedp.Run(ctx, chromedp.Text("#slices"))
	errText, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#error").hidden ? "" : document.querySelector("#error").innerText`))
	t.Logf("state=%v ttfa=%q slices=%q err=%q", st, ttfa, slices, errText)
	if st["ctx"] != "running" || st["err"] != nil {
		t.Fatalf("bad state %v", st)
	}
	if len(mgr.List()) != 1 {
		t.Fatalf("want one registered session, have %d", len(mgr.List()))
	}
}

const (
	startFailed   = "Session failed while starting — refresh the page to retry."
	runtimeFailed = "Generation stopped — press Start to begin a new session."
)

// TestPageStartFailure: any start failure (an error frame, then close 1011, before the
// first slice) shows the generic start text with the server's message, both when create
// fails and when the start fails after the initial buffer: at the stem payload (the
// production incident; the page plays a local file, so the server sends stems), after
// registration, or constructing the runner.
func TestPageStartFailure(t *testing.T) {
	for _, tc := range []struct {
		name, faults, point string
		localFile           bool // play a local (non-fixture) file: the server sends stems
		afterBuffer         bool // the failure comes after ready and the initial buffer
	}{
		{"create", "create.conditioning=error", "create.conditioning", false, false},
		{"stem payload", "handshake.stem_payload=error@1", "handshake.stem_payload", true, true},
		{"after register", "handshake.after_register=error", "handshake.after_register", false, true},
		{"runner init", "run.runner_init=error", "run.runner_init", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, mgr, dev, base := realServer(t, tc.faults, false)
			ctx, cancel := browser(t)
			defer cancel()
			actions := []chromedp.Action[chromedp.Void]{
				chromedp.Navigate(srv.URL + "/"),
				chromedp.Poll[chromedp.Void](`document.querySelector("#track").value !== ""`),
			}
			if tc.localFile {
				actions = append(actions, chooseLocalFile(t)...)
			}
			actions = append(actions,
				chromedp.Click("#start"),
				// The close arrived: the page has settled on its final text.
				chromedp.Poll[chromedp.Void](`window.__demon.closeCode !== null`, chromedp.WithPollingTimeout(20*time.Second)),
			)
			require.NoError(t, chromedp.Do(ctx, actions...))
			st := pageState(t, ctx)
			t.Logf("page after the failed start: %v", st)
			assert.Equal(t, "error", st["status"])
			assert.EqualValues(t, 1011, st["closeCode"])
			assert.Equal(t, tc.afterBuffer, st["ready"], "the failure came after ready and the initial buffer")
			assert.Zero(t, st["slices"])
			errText := fmt.Sprint(st["error"])
			assert.True(t, strings.HasPrefix(errText, startFailed), "generic start text, got %q", errText)
			assert.Contains(t, errText, tc.point, "the server's message is shown")
			assert.EqualValues(t, 1, mgr.Faults().Hits(tc.point), "the fault point was reached")
			// The failed start released everything before the page saw the close.
			trttest.RequireBaseline(t, dev, base)
			assert.Zero(t, mgr.Open(), "sessions open")
		})
	}
}

// TestPageRuntimeFailure: a failure after streaming started (pipeline_error, then close
// 1011) shows its own text, not the start-failure one.
func TestPageRuntimeFailure(t *testing.T) {
	srv, mgr, dev, base := realServer(t, "run.tick=error@40", false)
	ctx, cancel := browser(t)
	defer cancel()
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.Poll[chromedp.Void](`document.querySelector("#track").value !== ""`),
		chromedp.Click("#start"),
		chromedp.Poll[chromedp.Void](`window.__demon.closeCode !== null`, chromedp.WithPollingTimeout(20*time.Second)),
	))
	st := pageState(t, ctx)
	t.Logf("page after the runtime failure: %v", st)
	require.Positive(t, st["slices"], "streaming had started")
	assert.Equal(t, "error", st["status"])
	assert.EqualValues(t, 1011, st["closeCode"])
	errText := fmt.Sprint(st["error"])
	assert.True(t, strings.HasPrefix(errText, runtimeFailed), "runtime failure text, got %q", errText)
	assert.Contains(t, errText, "Generation stopped: ", "the server's message is shown")
	assert.NotContains(t, errText, startFailed)
	assert.EqualValues(t, 40, mgr.Faults().Hits("run.tick"))
	trttest.RequireBaseline(t, dev, base)
	assert.Zero(t, mgr.Open(), "sessions open")
}

// pageState reads the page's test hook and the visible error text.
func pageState(t *testing.T, ctx context.Context) map[string]any {
	t.Helper()
	st, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]any](`({status: __demon.status, closeCode: __demon.closeCode,
		ready: __demon.sessionReady !== null, slices: __demon.slicesReceived,
		error: document.querySelector("#error").hidden ? "" : document.querySelector("#error").innerText})`))
	require.NoError(t, err)
	return st
}

// chooseLocalFile writes a 6 s WAV that is no server fixture and picks it in the page's
// file input: the page decodes it and plays it as its source (PCM upload, stems "full").
func chooseLocalFile(t *testing.T) []chromedp.Action[chromedp.Void] {
	t.Helper()
	pcm, err := audio.SynthesizeDemo(audio.Catalogue()[0])
	require.NoError(t, err)
	var wav bytes.Buffer
	require.NoError(t, audio.EncodeWAV(&wav, pcm[:2*6*audio.SampleRate], 2, audio.SampleRate, audio.WAVPCM16))
	path := filepath.Join(t.TempDir(), "my-own-track.wav")
	require.NoError(t, os.WriteFile(path, wav.Bytes(), 0o600))
	return []chromedp.Action[chromedp.Void]{
		chromedp.SetUploadFiles("#file", []string{path}),
		chromedp.Poll[chromedp.Void](`document.querySelector("#use-file").checked`, chromedp.WithPollingTimeout(10*time.Second)),
	}
}

func TestPagePlaysUploadedPCM(t *testing.T) { pagePlays(t, true) }
