package ws

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/demon-audio/demon/session"
	"github.com/gorilla/websocket"
)

// Connection plumbing: the per-socket context, the inline handshake writes,
// the reader, the writer, keepalive and the closing sequence.

var (
	// errClientGone is the cause of a connection context whose client
	// disconnected (read or write failed).
	errClientGone = errors.New("client disconnected")
	// errShutdown is the cause when the server drains.
	errShutdown = errors.New("server shutting down")
	// errSlowClient: the outgoing queue overflowed with never-drop events.
	errSlowClient = errors.New("client too slow: outgoing queue overflow")
)

type conn struct {
	s     *Server
	ws    *websocket.Conn
	ip    string
	start time.Time
	log   atomic.Pointer[slog.Logger] // replaced as the session gets known; read by every goroutine

	// ctx ends when the client is gone or the server shuts down; its cause
	// tells which (errClientGone, errShutdown).
	ctx    context.Context
	cancel context.CancelCauseFunc

	shutdownCode  atomic.Int32
	readerStarted atomic.Bool
	writerStarted atomic.Bool
	slow          atomic.Bool

	sess   atomic.Pointer[session.Session]
	q      *Queue
	mirror *Mirror
	enc    SliceEncoding

	readerDone chan struct{}
	writerDone chan struct{}
	pingStop   chan struct{}
	pingDone   chan struct{}

	applyMu sync.Mutex // serialises apply: browser messages and control-bus commands
	// Messages that arrived before the session existed (guarded by applyMu;
	// holding tells without the lock that some wait), see hold.
	held         []heldMessage
	heldBytes    int
	heldParams   bool // params merged into knobs, not yet pushed to the session
	heldPlayhead bool // ... one of them carried playback_pos
	heldOverflow bool // the overflow error was sent
	holding      atomic.Bool
	replayDone   chan struct{} // closed when startReplay's goroutine ends; nil if none

	mu      sync.Mutex
	knobs   Knobs // merged params.raw
	lastRaw Knobs
	// reportedKnobs are the ignored knobs already named in a not_supported
	// event (once per knob per session).
	reportedKnobs map[string]bool
	playhead      float64
	playheadAt    time.Time
	duration      float64
	prompt        string
	timbreStr     float64
	sessOpen      bool // this connection owns an open session (guard or Run)
	dyingMarked   bool

	// lastSlice is the window of the last slice written, for sliceCoverage; only the
	// writer goroutine (which renders slices) touches it.
	lastSlice sliceWindow
}

// sliceWindow is a slice's place in a track of trackFrames frames.
type sliceWindow struct{ start, frames, trackFrames int }

func newConn(s *Server, wc *websocket.Conn, ip string, start time.Time) *conn {
	ctx, cancel := context.WithCancelCause(context.Background())
	c := &conn{
		s: s, ws: wc, ip: ip, start: start, ctx: ctx, cancel: cancel,
		readerDone: make(chan struct{}), writerDone: make(chan struct{}),
		pingStop: make(chan struct{}), pingDone: make(chan struct{}),
		knobs: Knobs{}, reportedKnobs: map[string]bool{}, playheadAt: time.Now(),
	}
	c.log.Store(s.log.With("remote", wc.RemoteAddr().String()))
	wc.SetPongHandler(func(string) error {
		if c.readerStarted.Load() {
			c.keepReading()
		}
		return nil
	})
	return c
}

func (c *conn) logger() *slog.Logger     { return c.log.Load() }
func (c *conn) setLogger(l *slog.Logger) { c.log.Store(l) }

// serve runs a socket to its end. Every goroutine it started has ended when
// it returns.
func (c *conn) serve() {
	defer c.cleanup()
	go c.pinger()
	// The first message may be a (wrong) binary of any size: read it as a
	// stream so that a too-large one gets an error frame, not a bare 1009.
	c.ws.SetReadLimit(MaxInboundMessage)
	_ = c.ws.SetReadDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	typ, r, err := c.ws.NextReader()
	var first []byte
	if err == nil && typ == websocket.TextMessage {
		first, err = io.ReadAll(io.LimitReader(r, textReadLimit+1))
		c.ws.SetReadLimit(textReadLimit)
	}
	if err != nil {
		if c.cause() == errShutdown {
			c.finish(c.shutdownOutcome())
			return
		}
		c.logger().Info("client left before sending its first message", "err", err)
		return
	}
	c.received(len(first))
	if typ != websocket.TextMessage {
		c.finish(startFailure(Error{Code: CodeBadConfig,
			Message: "the first message must be the JSON session config (a text frame); got a binary frame"}, websocket.CloseInternalServerErr))
		return
	}
	if len(first) > textReadLimit {
		c.finish(startFailure(Error{Code: CodeBadConfig,
			Message: fmt.Sprintf("the first message exceeds %d bytes", textReadLimit)}, websocket.CloseMessageTooBig))
		return
	}
	kind, err := FirstMessageKind(first)
	if err != nil {
		c.finish(startFailure(Error{Code: CodeBadConfig, Message: err.Error()}, websocket.CloseInternalServerErr))
		return
	}
	if kind == FirstUploadTrack {
		c.serveUpload(first)
		return
	}
	if !c.s.acquireSlot(c.ip) {
		c.logger().Warn("per-client session cap reached", "ip", c.ip, "max", c.s.opts.MaxSessionsPerClient)
		c.finish(outcome{frame: &Error{Code: CodeServerBusy,
			Message: fmt.Sprintf("too many sessions from your address (at most %d); close one and try again", c.s.opts.MaxSessionsPerClient)},
			code: websocket.CloseTryAgainLater, reason: "too many sessions from this address"})
		return
	}
	defer c.s.releaseSlot(c.ip)
	out := c.runSession(first)
	c.finish(out)
	if h := c.s.opts.Hooks.SessionEnded; h != nil {
		h(out.code)
	}
}

// cleanup ends the connection: context, pinger, socket, reader, writer.
func (c *conn) cleanup() {
	c.cancel(context.Canceled)
	close(c.pingStop)
	<-c.pingDone
	_ = c.ws.Close()
	if c.readerStarted.Load() {
		<-c.readerDone
	}
	if c.replayDone != nil {
		<-c.replayDone
	}
	if c.q != nil {
		c.q.Close()
	}
	if c.writerStarted.Load() {
		<-c.writerDone
	}
	if c.mirror != nil {
		c.mirror.Close()
	}
}

// cause returns why ctx ended (nil while live).
func (c *conn) cause() error {
	if c.ctx.Err() == nil {
		return nil
	}
	return context.Cause(c.ctx)
}

// gone records that the client disconnected: the session (if any) is
// stopped and counted as dying until it is closed.
func (c *conn) gone(err error) {
	if c.ctx.Err() == nil {
		c.logger().Info("client gone", "err", err)
	}
	c.cancel(errClientGone)
	if s := c.sess.Load(); s != nil {
		s.Stop()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sessOpen && !c.dyingMarked && c.cause() == errClientGone {
		c.dyingMarked = true
		c.s.markDying()
	}
}

// shutdown asks the socket to end with code (Server.Shutdown).
func (c *conn) shutdown(code int) {
	c.shutdownCode.CompareAndSwap(0, int32(code))
	c.cancel(errShutdown)
	if s := c.sess.Load(); s != nil {
		s.Stop()
	}
	if !c.readerStarted.Load() {
		// Unblock a handshake read (config or PCM).
		_ = c.ws.SetReadDeadline(time.Now())
	}
}

// setSession records the session this connection now owns.
func (c *conn) setSession(s *session.Session) {
	c.mu.Lock()
	c.sessOpen = true
	c.duration = s.Info.Duration
	c.mu.Unlock()
	c.sess.Store(s)
	if c.cause() == errClientGone {
		c.gone(errClientGone)
	}
}

// sessionReleased records that this connection no longer owns its session
// (it is closed, or, with the guard disabled in tests, abandoned).
func (c *conn) sessionReleased() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sessOpen = false
	if c.dyingMarked {
		c.dyingMarked = false
		c.s.markDead()
	}
}

func (c *conn) received(n int) {
	if h := c.s.opts.Hooks.BytesReceived; h != nil {
		h(n)
	}
}

func (c *conn) sent(n int) {
	if h := c.s.opts.Hooks.BytesSent; h != nil {
		h(n)
	}
}

// writeChunk is the most of a message written under one write deadline.
const writeChunk = 64 << 10

// writeFrame writes one message. A small one must go out within
// WriteTimeout. A larger one (the initial or a swap buffer) is written in
// chunks, as continuation frames: each chunk within WriteTimeout, so a
// stalled client is dropped as fast as with a small message, and the whole
// within WriteTimeout + size/MinWriteRate, so a slow link gets the time its
// size needs and a client too slow to ever stream is still dropped. Pings
// go out between chunks, so a slow but live client keeps answering them.
// Before the writer goroutine starts, the handshake goroutine is the only
// writer; after, only the writer goroutine is.
func (c *conn) writeFrame(f Frame) error {
	base := c.s.opts.WriteTimeout
	now := time.Now()
	if len(f.Data) <= writeChunk {
		_ = c.ws.SetWriteDeadline(now.Add(base))
		if err := c.ws.WriteMessage(f.Type, f.Data); err != nil {
			return err
		}
		c.sent(len(f.Data))
		return nil
	}
	whole := now.Add(base + time.Duration(float64(len(f.Data))/float64(c.s.opts.MinWriteRate)*float64(time.Second)))
	next := func() time.Time {
		if d := time.Now().Add(base); d.Before(whole) {
			return d
		}
		return whole
	}
	_ = c.ws.SetWriteDeadline(next())
	w, err := c.ws.NextWriter(f.Type)
	if err != nil {
		return err
	}
	for off := 0; off < len(f.Data); off += writeChunk {
		_ = c.ws.SetWriteDeadline(next())
		if _, err := w.Write(f.Data[off:min(off+writeChunk, len(f.Data))]); err != nil {
			return err
		}
	}
	_ = c.ws.SetWriteDeadline(next())
	if err := w.Close(); err != nil {
		return err
	}
	c.sent(len(f.Data))
	return nil
}

// writeNow writes frames inline (handshake); a failure means the client is
// gone.
func (c *conn) writeNow(frames ...Frame) error {
	for _, f := range frames {
		if err := c.writeFrame(f); err != nil {
			c.gone(err)
			return fmt.Errorf("%w: %v", errClientGone, err)
		}
	}
	return nil
}

func (c *conn) writeJSON(m ServerMessage) error {
	b, err := EncodeServerMessage(m)
	if err != nil {
		return err
	}
	return c.writeNow(Text(b))
}

// pinger sends WebSocket pings every PingInterval.
func (c *conn) pinger() {
	defer close(c.pingDone)
	t := time.NewTicker(c.s.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.pingStop:
			return
		case <-t.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.s.opts.WriteTimeout)); err != nil {
				c.logger().Debug("ping failed", "err", err)
			}
		}
	}
}

// ---- outcome and the closing sequence ---------------------------------------

// outcome is how a socket ends: an optional error frame, then a close frame
// with code and reason. gone means the client already left (nothing to send).
type outcome struct {
	frame  *Error
	code   int
	reason string
	gone   bool
}

func startFailure(e Error, code int) outcome {
	return outcome{frame: &e, code: code, reason: e.Message}
}

func (c *conn) shutdownOutcome() outcome {
	code := int(c.shutdownCode.Load())
	if code == 0 {
		code = websocket.CloseGoingAway
	}
	return outcome{frame: &Error{Code: CodeServerShutdown, Message: "the server is shutting down; reconnect in a moment"},
		code: code, reason: "server shutting down"}
}

// endedOutcome maps a ctx cause to an outcome (client gone or shutdown).
func (c *conn) endedOutcome() outcome {
	if c.cause() == errShutdown {
		return c.shutdownOutcome()
	}
	return outcome{gone: true, code: websocket.CloseGoingAway}
}

// finish sends the outcome. By the time it runs the session is closed (the
// guard or Run's own teardown ran first), so a client that retries on the
// close frame never races the teardown. The writer, if running, is drained
// and stopped first, so the error frame is the last data frame.
func (c *conn) finish(out outcome) {
	if c.q != nil {
		c.q.Close()
	}
	if c.writerStarted.Load() {
		select {
		case <-c.writerDone:
		case <-time.After(c.s.opts.WriteTimeout):
			c.logger().Warn("writer did not drain in time; closing the socket")
			_ = c.ws.Close()
			<-c.writerDone
		}
	}
	if out.gone || c.cause() == errClientGone {
		return
	}
	if out.frame != nil {
		if err := c.writeJSON(*out.frame); err != nil {
			return
		}
	}
	reason := out.reason
	if len(reason) > 123 { // RFC 6455: the close reason fits a 125-byte control frame
		reason = reason[:120] + "..."
	}
	if err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(out.code, reason),
		time.Now().Add(c.s.opts.WriteTimeout)); err != nil {
		return
	}
	c.sent(2 + len(reason))
	// Give the client a moment to answer the close; the reader (if running)
	// consumes the answer, otherwise read it here.
	_ = c.ws.SetReadDeadline(time.Now().Add(time.Second))
	if c.readerStarted.Load() {
		<-c.readerDone
		return
	}
	for {
		if _, r, err := c.ws.NextReader(); err != nil {
			return
		} else if _, err := io.Copy(io.Discard, r); err != nil {
			return
		}
	}
}

// rejectDraining answers an upgrade that arrived while the server drains.
func (c *conn) rejectDraining() {
	defer c.cleanup()
	go c.pinger()
	c.shutdownCode.Store(int32(c.s.drainCode()))
	c.finish(c.shutdownOutcome())
}

// ---- reader -------------------------------------------------------------------

// startReader creates the outgoing queue (events the reader answers during
// the handshake wait there until the writer starts) and starts the reader
// goroutine; from then on only it reads.
func (c *conn) startReader() {
	c.q = NewQueue(c.s.opts.OutgoingQueue)
	c.readerStarted.Store(true)
	// Every message is read as a stream and held to its own limit (text
	// textReadLimit, a PCM follow-up MaxUploadBytes): one over it is read to
	// its end and answered, not closed with 1009. Only a frame over the
	// protocol's inbound maximum ends the socket, as with DEMON's max_size.
	c.ws.SetReadLimit(MaxInboundMessage)
	c.keepReading()
	go c.reader()
}

// keepReading pushes the read deadline two ping intervals out: the client
// counts as alive while anything arrives (a message, a chunk of a large one,
// a pong).
func (c *conn) keepReading() {
	_ = c.ws.SetReadDeadline(time.Now().Add(2 * c.s.opts.PingInterval))
}

func (c *conn) reader() {
	defer close(c.readerDone)
	for {
		typ, r, err := c.ws.NextReader()
		if err != nil {
			c.gone(err)
			return
		}
		c.keepReading()
		if typ != websocket.TextMessage {
			// A binary frame outside a follow-up pair is ignored (§4.6),
			// whatever its size.
			n, err := c.discard(r)
			if err != nil {
				c.gone(err)
				return
			}
			c.logger().Info("ignoring a binary message where a JSON message was expected", "bytes", n)
			continue
		}
		data, over, err := c.readPayload(r, textReadLimit)
		if err != nil {
			c.gone(err)
			return
		}
		if over {
			c.logger().Info("ignoring an oversized text message", "limit", textReadLimit)
			c.send(Error{Code: CodeBadMessage, Message: fmt.Sprintf("message exceeds %d bytes; ignored", textReadLimit)})
			continue
		}
		c.dispatch(data)
	}
}

// readFollowUp reads the message that follows a set_*_source / PCM
// swap_source (§4.6 binary follow-up rule), whatever its type. One over
// MaxUploadBytes is read to its end and dropped (tooBig), so the caller can
// answer it and the session goes on.
func (c *conn) readFollowUp() (data []byte, tooBig bool, err error) {
	_, r, err := c.ws.NextReader()
	if err != nil {
		return nil, false, err
	}
	c.keepReading()
	return c.readPayload(r, c.s.opts.MaxUploadBytes)
}

// readPayload reads the rest of a message of at most limit bytes. A longer
// one is read to its end and discarded (over): the socket stays in step.
func (c *conn) readPayload(r io.Reader, limit int64) (data []byte, over bool, err error) {
	lr := &liveReader{c: c, r: r}
	defer func() { c.received(int(lr.n)) }()
	if data, err = io.ReadAll(io.LimitReader(lr, limit+1)); err != nil {
		return nil, false, err
	}
	if int64(len(data)) <= limit {
		return data, false, nil
	}
	_, err = io.Copy(io.Discard, lr)
	return nil, true, err
}

// discard reads the rest of a message and drops it.
func (c *conn) discard(r io.Reader) (int64, error) {
	lr := &liveReader{c: c, r: r}
	_, err := io.Copy(io.Discard, lr)
	c.received(int(lr.n))
	return lr.n, err
}

// liveReader counts a message's bytes and keeps the read deadline moving
// while they arrive: a 100 MiB PCM frame on a slow uplink may take longer
// than the deadline, but a stalled one still times out.
type liveReader struct {
	c *conn
	r io.Reader
	n int64
}

func (l *liveReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if n > 0 {
		l.n += int64(n)
		l.c.keepReading()
	}
	return n, err
}

// ---- writer -------------------------------------------------------------------

// startWriter starts the writer goroutine; from then on only it writes
// data frames.
func (c *conn) startWriter() {
	c.writerStarted.Store(true)
	go c.writer()
}

func (c *conn) writer() {
	defer close(c.writerDone)
	for {
		g, err := c.q.Pop(context.Background())
		if err != nil {
			if errors.Is(err, ErrSubscriberDropped) {
				c.logger().Warn("dropping slow client", "err", err)
				c.slow.Store(true)
				if s := c.sess.Load(); s != nil {
					s.Stop()
				}
			}
			return
		}
		if c.cause() == errClientGone {
			continue // drain without writing
		}
		frames, err := g.Materialize()
		if err != nil {
			c.logger().Error("encoding an outgoing message failed", "kind", g.Kind, "err", err)
			continue
		}
		for _, f := range frames {
			if err := c.writeFrame(f); err != nil {
				c.gone(err)
				break
			}
		}
	}
}

// push queues a group for the writer; before the writer exists (a message
// handled during the handshake) the group waits in the queue created then.
func (c *conn) push(g Group) PushResult {
	r := c.q.Push(g)
	if r == SubscriberDropped {
		c.slow.Store(true)
	}
	return r
}

// send queues a JSON event (acks, not_supported, errors).
func (c *conn) send(m ServerMessage) {
	g, err := JSONGroup(m)
	if err != nil {
		c.logger().Error("encoding an event failed", "type", m.MessageType(), "err", err)
		return
	}
	c.push(g)
}

// sliceCoverage reports to the StaleGap hook the stretch of the track that the
// previous slice and this one (start, frames) leave unpatched (see StaleGap). Called on
// the writer goroutine, in write order.
func (c *conn) sliceCoverage(start, frames int) {
	total := c.mirror.Frames()
	prev := c.lastSlice
	c.lastSlice = sliceWindow{start: start, frames: frames, trackFrames: total}
	h := c.s.opts.Hooks.StaleGap
	if h == nil || prev.frames == 0 || prev.trackFrames != total {
		return // the first slice of this track
	}
	if gap := StaleGap(prev.start, prev.frames, start, total); gap > 0 {
		h(time.Duration(gap) * time.Second / 48000)
	}
}

// sliceLateness reports how far past the slice start the client's
// extrapolated playhead is (modulo the loop), for the SliceLateness hook.
func (c *conn) sliceLateness(start int) {
	h := c.s.opts.Hooks.SliceLateness
	if h == nil {
		return
	}
	c.mu.Lock()
	dur := c.duration
	pos := c.playhead + time.Since(c.playheadAt).Seconds()
	c.mu.Unlock()
	if dur <= 0 {
		return
	}
	d := math.Mod(pos-float64(start)/48000, dur)
	if d > dur/2 {
		d -= dur
	} else if d <= -dur/2 {
		d += dur
	}
	h(time.Duration(d * float64(time.Second)))
}
