package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/demon-audio/demon/audio"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// demondBinary builds the real cmd/demond once per test binary.
func demondBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "demond-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "demond")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/demond").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, binErr)
	return binPath
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// runDemond starts the real binary under a fake systemd and returns it with its address.
func runDemond(t *testing.T, env []string, args ...string) (*exec.Cmd, string, <-chan string, *syncBuffer) {
	t.Helper()
	msgs := fakeNotifySocket(t) // sets NOTIFY_SOCKET in the environment
	addr := freePort(t)
	cmd := exec.Command(demondBinary(t), append([]string{
		"--models", testRepo(t), "--model-profile", "test-10s", "--listen", addr, "--control-listen", "",
		"--data-dir", t.TempDir(), "--device-capacity", "2GiB",
	}, args...)...)
	cmd.Env = append(append(os.Environ(), "WATCHDOG_USEC=400000", "WATCHDOG_PID="), env...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	// WATCHDOG_PID must name the child: without it the variable is ignored by go-systemd
	// only when it names another process, so leave it empty (= any).
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
	})
	return cmd, addr, msgs, logs
}

// wsSession starts a session on a server-side demo track and reads ready + the buffer.
func wsSession(t *testing.T, addr string) (*websocket.Conn, map[string]any) {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	cfg := fmt.Sprintf(`{"prompt":"ambient","depth":4,"fixture_name":%q,"use_server_fixture":true,"slice_encoding":"raw"}`, audio.Catalogue()[0])
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(cfg)))
	_, msg, err := c.ReadMessage()
	require.NoError(t, err)
	var ready map[string]any
	require.NoError(t, json.Unmarshal(msg, &ready), string(msg))
	require.Equal(t, "ready", ready["type"], string(msg))
	kind, _, err := c.ReadMessage()
	require.NoError(t, err)
	require.Equal(t, websocket.BinaryMessage, kind, "initial buffer")
	return c, ready
}

// readSlices reads until n binary slices arrived.
func readSlices(t *testing.T, c *websocket.Conn, n int) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
	for got := 0; got < n; {
		kind, _, err := c.ReadMessage()
		require.NoError(t, err)
		if kind == websocket.BinaryMessage {
			got++
		}
	}
}

// The real binary under a fake systemd: READY=1 after warmup, WATCHDOG=1 while healthy,
// and on SIGTERM (systemd's stop) or SIGINT (Ctrl-C under `make run`): STOPPING=1, live
// sessions get the shutdown frame and close 1001, the ledger is back at zero, exit code 0.
func TestBinaryNotifyAndDrain(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{{"SIGTERM", syscall.SIGTERM}, {"SIGINT", syscall.SIGINT}} {
		t.Run(tc.name, func(t *testing.T) { notifyAndDrainOn(t, tc.sig) })
	}
}

func notifyAndDrainOn(t *testing.T, sig syscall.Signal) {
	cmd, addr, msgs, logs := runDemond(t, nil, "--warmup=true")
	m := await(t, msgs, "READY=1", 60*time.Second)
	assert.Contains(t, m, "STATUS=ready")
	await(t, msgs, "WATCHDOG=1", 2*time.Second)

	resp, err := http.Get("http://" + addr + "/readyz")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, string(body))

	c, ready := wsSession(t, addr)
	assert.NotEmpty(t, ready["session_id"])
	readSlices(t, c, 2)

	require.NoError(t, cmd.Process.Signal(sig))
	await(t, msgs, "STOPPING=1", 5*time.Second)
	var frame map[string]any
	var closeCode int
	require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
	for closeCode == 0 {
		kind, msg, err := c.ReadMessage()
		if ce, ok := err.(*websocket.CloseError); ok {
			closeCode = ce.Code
			break
		}
		require.NoError(t, err)
		if kind == websocket.TextMessage {
			var v map[string]any
			if json.Unmarshal(msg, &v) == nil && v["type"] == "error" {
				frame = v
			}
		}
	}
	assert.Equal(t, websocket.CloseGoingAway, closeCode)
	require.NotNil(t, frame, "the shutdown error frame came before the close")
	assert.Equal(t, "server_shutdown", frame["code"])

	require.NoError(t, cmd.Wait(), "exit code 0\n%s", logs.String())
	assert.Contains(t, logs.String(), "device released; ledger at zero")
	assert.Contains(t, logs.String(), "warmup passed")
}

// A hung tick loop stops the watchdog pings (the fault point run.tick=hang blocks one
// session's tick), so systemd would restart demond.
func TestBinaryWatchdogStopsWhenATickLoopHangs(t *testing.T) {
	_, addr, msgs, logs := runDemond(t, []string{"DEMON_FAILPOINTS=run.tick=hang@15"},
		"--warmup=false", "--tick-stall-timeout", "500ms")
	await(t, msgs, "READY=1", 60*time.Second)
	await(t, msgs, "WATCHDOG=1", 2*time.Second)
	c, _ := wsSession(t, addr)
	_ = c
	// Tick 15 hangs after ~0.6 s of streaming; within the stall timeout the pings stop.
	await(t, msgs, "STATUS=watchdog:", 10*time.Second)
	quiet := drain(msgs, 1500*time.Millisecond)
	for _, m := range quiet {
		assert.NotContains(t, m, "WATCHDOG=1", "no pings while the tick loop is hung\n%s", logs.String())
	}
	assert.True(t, strings.Contains(logs.String(), "fault points armed"))
}
