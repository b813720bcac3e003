//go:build browser

// Browser check of the embedded page against a fake session server built
// from the ws and audio packages (no engine): the page starts a session,
// plays the echoed buffer in an AudioWorklet, applies RAW slices, and shows
// the exact start-failure text. Needs Chromium:
//
//	go test -tags browser -count=1 ./web
//
// CHROMIUM=/path/to/chromium overrides the binary lookup.
package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/demon-audio/demon/audio"
	"github.com/demon-audio/demon/web"
	"github.com/demon-audio/demon/ws"
	"github.com/gorilla/websocket"
)

var pcmMode bool

func fakeServer(t *testing.T, failStart bool) *httptest.Server {
	up := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/fixtures", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(audio.Catalogue())
	})
	mux.HandleFunc("/api/server-info", func(w http.ResponseWriter, r *http.Request) {
		if pcmMode {
			json.NewEncoder(w).Encode(map[string]any{"server_side_fixtures": []string{}})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"server_side_fixtures": audio.Catalogue()})
	})
	mux.HandleFunc("/fixtures/", func(w http.ResponseWriter, r *http.Request) {
		pcm, err := audio.SynthesizeDemo(strings.TrimPrefix(r.URL.Path, "/fixtures/"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "audio/x-wav")
		audio.EncodeWAV(w, pcm, 2, 48000, audio.WAVPCM16)
	})
	mux.HandleFunc("/api/user_uploads", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("[]")) })
	page := web.Handler()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			page.ServeHTTP(w, r)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		_, first, err := c.ReadMessage()
		if err != nil {
			return
		}
		cfg, err := ws.ParseSessionConfig(first)
		if err != nil {
			t.Errorf("config: %v", err)
			return
		}
		t.Logf("config: fixture=%s server=%v enc=%s", cfg.FixtureName, cfg.UseServerFixture, cfg.SliceEncoding)
		if failStart {
			b, _ := ws.EncodeServerMessage(ws.Error{Code: ws.CodeEngineNotBuilt, Message: "TRT engine not built for 20 s"})
			c.WriteMessage(websocket.TextMessage, b)
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1011, "TRT engine not built"), time.Now().Add(time.Second))
			time.Sleep(200 * time.Millisecond)
			return
		}
		pcm, _ := audio.SynthesizeDemo(cfg.FixtureName)
		if !cfg.UseServerFixture {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			pch, frames, got, err := ws.DecodePCMFrame(b)
			if err != nil {
				t.Errorf("pcm: %v", err)
				return
			}
			t.Logf("PCM frame: %d ch × %d frames, max diff vs source %.5f", pch, frames, ws.MaxAbsDiff(got, pcm))
			pcm = got
		}
		buf, ch, err := audio.NormalizeSource(pcm, 2, audio.NormalizeOptions{})
		if err != nil {
			t.Error(err)
			return
		}
		m, _ := ws.NewMirror(ch, buf)
		defer m.Close()
		ready, _ := ws.EncodeServerMessage(ws.Ready{Channels: ch, Duration: float64(len(buf)/ch) / 48000, SampleRate: 48000, PipelineDepth: 4})
		c.WriteMessage(websocket.TextMessage, ready)
		c.WriteMessage(websocket.BinaryMessage, m.AppendF16(nil))
		params := make(chan float64, 1000)
		go func() {
			for {
				_, b, err := c.ReadMessage()
				if err != nil {
					close(params)
					return
				}
				msg, err := ws.DecodeClientMessage(b)
				if err == nil {
					if p, ok := msg.(*ws.Params); ok {
						select {
						case params <- p.PlaybackPos:
						default:
						}
					}
				}
			}
		}()
		pos := 0.0
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for range 100 {
			<-tick.C
		drain:
			for {
				select {
				case p, ok := <-params:
					if !ok {
						return
					}
					pos = p
				default:
					break drain
				}
			}
			start := (int((pos+0.5)*25) * 1920) % (len(buf) / ch)
			start = min(start, len(buf)/ch-17280)
			s := make([]float32, 17280*2)
			copy(s, buf[start*2:])
			for i := range s {
				s[i] *= 0.5
			}
			fr, err := m.EncodeSlice(cfg.SliceEncoding, ws.SliceHeader{}, start, s)
			if err != nil {
				t.Error(err)
				return
			}
			if c.WriteMessage(websocket.BinaryMessage, fr) != nil {
				return
			}
		}
	})
	return httptest.NewServer(mux)
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

func TestPagePlays(t *testing.T) {
	srv := fakeServer(t, false)
	defer srv.Close()
	ctx, cancel := browser(t)
	defer cancel()
	err := chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible("#start"),
		chromedp.Poll[chromedp.Void](`document.querySelector("#track").value !== ""`),
		chromedp.Click("#start"),
		chromedp.Poll[chromedp.Void](`window.__demon.status === "playing" && window.__demon.slicesReceived >= 5`, chromedp.WithPollingTimeout(30*time.Second)),
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
}

func TestPageStartFailure(t *testing.T) {
	srv := fakeServer(t, true)
	defer srv.Close()
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
}

func TestPagePlaysUploadedPCM(t *testing.T) {
	pcmMode = true
	defer func() { pcmMode = false }()
	TestPagePlays(t)
}
