package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// WSClient starts sessions over DEMON's browser protocol (protocol.md §3–§4): config JSON
// (+ PCM frame unless the server has the fixture), ready, initial buffer, then slices. It
// decodes slice headers only (it keeps no mirror: the payload is not needed to time it).
type WSClient struct {
	URL string // ws://host:port/
	// Fixture is the track; UseServerFixture sends no PCM (the server loads it by name),
	// otherwise PCM is uploaded as the PCM frame.
	Fixture          string
	UseServerFixture bool
	PCM              []float32
	Depth, Steps     int
	// StemMode, if set, is sent as stem_source_mode (the start then carries stems).
	StemMode string
	// ParamsInterval is how often params (with playback_pos) are sent (default 40 ms;
	// the browser sends every 8 ms).
	ParamsInterval time.Duration
	// HandshakeTimeout bounds connect → initial buffer (default 5 min).
	HandshakeTimeout time.Duration
}

// Kind implements Client.
func (c *WSClient) Kind() string { return "websocket" }

// ErrServer is a start refused or failed by the server (error frame or early close).
type ErrServer struct {
	Code    string
	Message string
	Close   int
}

func (e *ErrServer) Error() string {
	return fmt.Sprintf("server error %s (close %d): %s", e.Code, e.Close, e.Message)
}

// sliceHeaderSize is the packed "<BIIHffI" header of an audio slice (protocol.md §4.1).
const sliceHeaderSize = 23

// parseSliceHeader decodes an audio slice header.
func parseSliceHeader(b []byte) (SliceRecord, bool) {
	if len(b) < sliceHeaderSize {
		return SliceRecord{}, false
	}
	le := binary.LittleEndian
	return SliceRecord{
		StartFrame: int64(le.Uint32(b[1:5])),
		Frames:     int(le.Uint32(b[5:9])),
		TickMs:     math.Float32frombits(le.Uint32(b[11:15])),
		DecMs:      math.Float32frombits(le.Uint32(b[15:19])),
		NumGens:    le.Uint32(b[19:23]),
	}, true
}

// pcmFrame encodes the client's PCM frame: u32 channels | u32 frames | f32 samples.
func pcmFrame(pcm []float32, channels int) []byte {
	b := make([]byte, 8+4*len(pcm))
	binary.LittleEndian.PutUint32(b[0:], uint32(channels))
	binary.LittleEndian.PutUint32(b[4:], uint32(len(pcm)/channels))
	for i, v := range pcm {
		binary.LittleEndian.PutUint32(b[8+4*i:], math.Float32bits(v))
	}
	return b
}

// Start implements Client.
func (c *WSClient) Start(ctx context.Context) (Live, error) {
	to := c.HandshakeTimeout
	if to <= 0 {
		to = 5 * time.Minute
	}
	hctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	t0 := time.Now()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 64 << 10, WriteBufferSize: 64 << 10}
	conn, _, err := d.DialContext(hctx, c.URL, http.Header{})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", c.URL, err)
	}
	conn.SetReadLimit(256 << 20)
	if dl, ok := hctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	fail := func(err error) (Live, error) { conn.Close(); return nil, err }
	depth, steps := c.Depth, c.Steps
	if depth == 0 {
		depth = 4
	}
	if steps == 0 {
		steps = 8
	}
	cfg := map[string]any{
		"sde": false, "lora": false, "depth": depth, "vae_window": SliceSeconds, "crop": 0, "steps": steps,
		"fast_vae": false, "walk_window": false, "walk_window_s": 60, "enabled_loras": []string{},
		"prompt": "ambient electronic, warm pads", "prompt_b": "dark techno", "lora_strengths": map[string]float64{},
		"fixture_name": c.Fixture, "use_server_fixture": c.UseServerFixture,
	}
	if c.StemMode != "" {
		cfg["stem_source_mode"] = c.StemMode
	}
	js, _ := json.Marshal(cfg)
	if err := conn.WriteMessage(websocket.TextMessage, js); err != nil {
		return fail(err)
	}
	if !c.UseServerFixture {
		if err := conn.WriteMessage(websocket.BinaryMessage, pcmFrame(c.PCM, 2)); err != nil {
			return fail(err)
		}
	}
	l := &wsLive{conn: conn, t0: t0, params: c.ParamsInterval, done: make(chan struct{})}
	if l.params <= 0 {
		l.params = 40 * time.Millisecond
	}
	// ready (or error)
	typ, msg, err := conn.ReadMessage()
	if err != nil {
		return fail(closeErr(err))
	}
	if typ != websocket.TextMessage {
		return fail(errors.New("protocol: binary message before ready"))
	}
	var ready struct {
		Type     string  `json:"type"`
		Code     string  `json:"code"`
		Message  string  `json:"message"`
		Duration float64 `json:"duration"`
		Channels int     `json:"channels"`
	}
	if err := json.Unmarshal(msg, &ready); err != nil {
		return fail(fmt.Errorf("protocol: ready: %w", err))
	}
	if ready.Type == "error" {
		e := &ErrServer{Code: ready.Code, Message: ready.Message}
		// The close frame follows.
		if _, _, err := conn.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				e.Close = ce.Code
			}
		}
		return fail(e)
	}
	if ready.Type != "ready" {
		return fail(fmt.Errorf("protocol: unexpected init message %s", msg))
	}
	l.t1, l.duration = time.Now(), ready.Duration
	typ, msg, err = conn.ReadMessage()
	if err != nil {
		return fail(closeErr(err))
	}
	if typ != websocket.BinaryMessage {
		e := &ErrServer{Code: "protocol", Message: "initial buffer is not binary: " + string(msg)}
		var em struct{ Type, Code, Message string }
		if json.Unmarshal(msg, &em) == nil && em.Type == "error" {
			e.Code, e.Message = em.Code, em.Message
		}
		if _, _, err := conn.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				e.Close = ce.Code
			}
		}
		return fail(e)
	}
	l.t2 = time.Now()
	_ = conn.SetReadDeadline(time.Time{})
	return l, nil
}

func closeErr(err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return &ErrServer{Code: "closed", Message: ce.Text, Close: ce.Code}
	}
	return err
}

type wsLive struct {
	conn       *websocket.Conn
	t0, t1, t2 time.Time
	duration   float64
	params     time.Duration
	wmu        sync.Mutex
	once       sync.Once
	done       chan struct{} // closed when the reader goroutine has ended (Stream only)
	streamed   bool
}

func (l *wsLive) ConnectAt() time.Time { return l.t0 }
func (l *wsLive) ReadyAt() time.Time   { return l.t1 }
func (l *wsLive) InitialAt() time.Time { return l.t2 }
func (l *wsLive) Duration() float64    { return l.duration }

func (l *wsLive) write(typ int, b []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	_ = l.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return l.conn.WriteMessage(typ, b)
}

func (l *wsLive) Stream(ctx context.Context, onSlice func(SliceRecord) bool) error {
	l.streamed = true
	type item struct {
		r   SliceRecord
		err error
	}
	items := make(chan item, 256)
	stop := make(chan struct{})
	defer close(stop)
	// The reader owns conn's read side until the connection ends (Close waits for it).
	go func() {
		defer close(l.done)
		stopped := false
		pendingStems := 0
		for {
			typ, msg, err := l.conn.ReadMessage()
			if err != nil {
				if !stopped {
					select {
					case items <- item{err: err}:
					case <-stop:
					}
				}
				return
			}
			if stopped {
				continue
			}
			if typ == websocket.TextMessage {
				// params_update and other JSON; a stem payload announces binaries that
				// are not slices (protocol.md §3.5).
				if bytes.Contains(msg, []byte(`"stem_assets"`)) {
					var sa struct {
						Type  string   `json:"type"`
						Stems []string `json:"stems"`
					}
					if json.Unmarshal(msg, &sa) == nil && sa.Type == "stem_assets" {
						pendingStems += len(sa.Stems)
					}
				}
				continue
			}
			if pendingStems > 0 {
				pendingStems--
				continue
			}
			r, ok := parseSliceHeader(msg)
			if !ok {
				continue
			}
			r.At = time.Now()
			select {
			case items <- item{r: r}:
			case <-stop:
				stopped = true
			}
		}
	}()
	// The browser's automatic messages after ready (protocol.md §3.6), then params.
	_ = l.write(websocket.TextMessage, []byte(`{"type":"loop_band","start_sec":null,"end_sec":null}`))
	t := time.NewTicker(l.params)
	defer t.Stop()
	// An unchanged knob heartbeat is not activity (the server idle-pauses after 20 s, as
	// DEMON does); a user at the controls is modelled by a harmless message every 2 s.
	act := time.NewTicker(2 * time.Second)
	defer act.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case it := <-items:
			if it.err != nil {
				if websocket.IsCloseError(it.err, websocket.CloseNormalClosure) || errors.Is(it.err, net.ErrClosed) {
					return nil
				}
				return closeErr(it.err)
			}
			if !onSlice(it.r) {
				return nil
			}
		case <-act.C:
			if err := l.write(websocket.TextMessage, []byte(`{"type":"loop_band","start_sec":null,"end_sec":null}`)); err != nil {
				return err
			}
		case now := <-t.C:
			pos := now.Sub(l.t2).Seconds()
			if l.duration > 0 {
				pos = mod(pos, l.duration)
			}
			msg := fmt.Sprintf(`{"type":"params","raw":{"denoise":0.5,"seed":42},"playback_pos":%.4f}`, pos)
			if err := l.write(websocket.TextMessage, []byte(msg)); err != nil {
				return err
			}
		}
	}
}

// Close sends a normal close and waits briefly for the server's close frame (the server
// closes the session before answering, in DEMON's order).
func (l *wsLive) Close() error {
	l.once.Do(func() {
		_ = l.write(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bench done"))
		_ = l.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if l.streamed {
			<-l.done
		} else {
			for {
				if _, _, err := l.conn.ReadMessage(); err != nil {
					break
				}
			}
		}
		l.conn.Close()
	})
	return nil
}

// httpBase turns ws://host:port/path into http://host:port.
func httpBase(wsURL string) (string, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	return strings.TrimSuffix(u.Scheme+"://"+u.Host, "/"), nil
}
