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
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/demon-audio/demon/models"
	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/trt"
	"github.com/demon-audio/demon/trt/trttest"
	"github.com/demon-audio/demon/ws"
	"github.com/gorilla/websocket"
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

func TestPageStartFailure(t *testing.T) {
	srv, mgr, dev, base := realServer(t, "create.conditioning=error", false)
	ctx, cancel := browser(t)
	defer cancel()
	err := chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.Poll[chromedp.Void](`document.querySelector("#track").value !== ""`),
		chromedp.Click("#start"),
		chromedp.Poll[chromedp.Void](`window.__demon.status === "error"`, chromedp.WithPollingTimeout(20*time.Second)),
		chromedp.Sleep(300*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	errText, _ := chromedp.Run(ctx, chromedp.Text("#error"))
	status, _ := chromedp.Run(ctx, chromedp.Text("#status"))
	t.Logf("error=%q status=%q", errText, status)
	want := "Session failed while starting — refresh the page to retry."
	if len(errText) < len(want) || errText[:len(want)] != want {
		t.Fatalf("got %q", errText)
	}
	// The failed start released everything before the page saw the close.
	trttest.RequireBaseline(t, dev, base)
	if mgr.Open() != 0 {
		t.Fatalf("%d sessions open", mgr.Open())
	}
}

func TestPagePlaysUploadedPCM(t *testing.T) { pagePlays(t, true) }
