package ws

import (
	"context"
	"errors"
	"sync"
)

// Outgoing queue (lifecycle.md §6.2, protocol.md §4.10).
//
// Each connection has one Queue and one writer goroutine. Producers (the
// runner, the receive loop) Push groups without ever blocking; the writer
// Pops them and writes each group's frames back to back, so a JSON message
// and its binary follow-ups are never interleaved with other frames.
//
// Policies follow DEMON's event bus: audio slices DropOldest, telemetry
// echoes Coalesce, everything else NeverDrop. The overflow algorithm on a
// full queue is, in order:
//
//  1. Coalesce: replace the newest queued group of the same Kind in place;
//  2. otherwise evict the oldest droppable (non-NeverDrop) group and append;
//  3. if every queued group is NeverDrop and the incoming one is lossy, drop
//     the incoming group;
//  4. if every queued group is NeverDrop and the incoming one is NeverDrop
//     too, the subscriber is dropped: the queue is cleared, the next Pop
//     returns ErrSubscriberDropped (exactly once) and the queue is closed.
//     The server must treat that as fatal: stop the session and close the
//     socket (the client reconnects).
//
// Below capacity every group is appended (no coalescing), as in DEMON.
//
// Audio and the mirror: a group may carry a Render function instead of
// frames. The writer calls it at dequeue time, so a slice that is evicted
// while queued was never encoded and never touched the mirror (§4.2: "drop
// only before the mirror is updated"). AudioGroup and SwapGroup build such
// groups.

// Policy is a group's drop policy.
type Policy int

const (
	// NeverDrop groups are never evicted (control events, acks, swaps).
	NeverDrop Policy = iota
	// DropOldest groups may be evicted when the queue is full (audio).
	DropOldest
	// Coalesce groups replace the newest queued group of the same Kind
	// when the queue is full (params_update and echoes).
	Coalesce
)

func (p Policy) String() string {
	switch p {
	case DropOldest:
		return "drop_oldest"
	case Coalesce:
		return "coalesce"
	}
	return "never_drop"
}

// WS message kinds, numerically equal to gorilla/websocket's TextMessage
// and BinaryMessage.
const (
	TextMessage   = 1
	BinaryMessage = 2
)

// Frame is one WebSocket message.
type Frame struct {
	Type int // TextMessage or BinaryMessage
	Data []byte
}

// Text returns a text frame.
func Text(b []byte) Frame { return Frame{Type: TextMessage, Data: b} }

// Binary returns a binary frame.
func Binary(b []byte) Frame { return Frame{Type: BinaryMessage, Data: b} }

// Group is a unit the writer sends contiguously.
type Group struct {
	// Kind identifies the event for coalescing and metrics, e.g.
	// "params_update", "audio", "swap_ready".
	Kind   string
	Policy Policy
	// Frames are written in order. Ignored if Render is set.
	Frames []Frame
	// Render, if set, produces the frames at dequeue time on the writer
	// goroutine. An error means "send nothing for this group".
	Render func() ([]Frame, error)
}

// Materialize returns the frames to write, calling Render if set.
func (g Group) Materialize() ([]Frame, error) {
	if g.Render != nil {
		return g.Render()
	}
	return g.Frames, nil
}

// JSONGroup encodes one server message into a single-frame group with the
// message type's policy.
func JSONGroup(m ServerMessage, binaries ...[]byte) (Group, error) {
	b, err := EncodeServerMessage(m)
	if err != nil {
		return Group{}, err
	}
	frames := make([]Frame, 0, 1+len(binaries))
	frames = append(frames, Text(b))
	for _, bin := range binaries {
		frames = append(frames, Binary(bin))
	}
	return Group{Kind: m.MessageType(), Policy: PolicyFor(m.MessageType()), Frames: frames}, nil
}

// PendingSlice is an audio slice waiting to be encoded. Samples must not
// be modified after queueing (give the queue its own copy).
type PendingSlice struct {
	Start   int       // first frame
	Samples []float32 // interleaved new content
	TickMs  float32
	DecMs   float32
	NumGens uint32
	// Params, if non-nil, is sent right after the slice (params_update).
	Params *ParamsUpdate
}

// AudioGroup returns a DropOldest group that encodes s against m only when
// the writer dequeues it. The encoded frame aliases m's scratch buffer: the
// writer must finish writing it before rendering the next audio group
// (which a single writer goroutine does naturally).
func AudioGroup(m *Mirror, enc SliceEncoding, s PendingSlice) Group {
	return Group{Kind: "audio", Policy: DropOldest, Render: func() ([]Frame, error) {
		b, err := m.EncodeSlice(enc, SliceHeader{TickMs: s.TickMs, DecMs: s.DecMs, NumGens: s.NumGens}, s.Start, s.Samples)
		if err != nil {
			return nil, err
		}
		frames := []Frame{Binary(b)}
		if s.Params != nil {
			j, err := EncodeServerMessage(*s.Params)
			if err == nil {
				frames = append(frames, Text(j))
			}
		}
		return frames, nil
	}}
}

// SwapGroup returns the NeverDrop group for a completed swap: swap_ready,
// the new buffer as float16, then optional trailing groups (stem_assets +
// binaries, or stem_failed). The mirror is reset to buf when the writer
// renders the group, so slices queued before it are encoded against the
// old buffer and slices queued after it against the new one.
func SwapGroup(m *Mirror, ready SwapReady, buf []float32, trailer ...Frame) Group {
	return Group{Kind: TypeSwapReady, Policy: NeverDrop, Render: func() ([]Frame, error) {
		j, err := EncodeServerMessage(ready)
		if err != nil {
			return nil, err
		}
		if err := m.Reset(ready.Channels, buf); err != nil {
			return nil, err
		}
		frames := []Frame{Text(j), Binary(m.AppendF16(nil))}
		return append(frames, trailer...), nil
	}}
}

// FrameWriter is satisfied by *websocket.Conn (gorilla).
type FrameWriter interface {
	WriteMessage(messageType int, data []byte) error
}

// WriteFrames writes frames in order, stopping at the first error.
func WriteFrames(w FrameWriter, frames []Frame) error {
	for _, f := range frames {
		if err := w.WriteMessage(f.Type, f.Data); err != nil {
			return err
		}
	}
	return nil
}

// Queue errors.
var (
	// ErrSubscriberDropped is returned once by Pop after a NeverDrop
	// overflow (rule 4). The session must be torn down.
	ErrSubscriberDropped = errors.New("ws: subscriber dropped: outgoing queue full of never-drop events")
	// ErrQueueClosed is returned by Pop once a closed queue is drained.
	ErrQueueClosed = errors.New("ws: outgoing queue closed")
)

// PushResult says what Push did.
type PushResult int

const (
	// Appended: the group was added at the tail.
	Appended PushResult = iota
	// Coalesced: the group replaced the newest queued group of its Kind.
	Coalesced
	// EvictedOldest: the oldest droppable group was evicted to make room.
	EvictedOldest
	// DroppedIncoming: the queue is full of NeverDrop groups; the lossy
	// incoming group was dropped.
	DroppedIncoming
	// SubscriberDropped: rule 4 fired; the queue is now closing.
	SubscriberDropped
	// Rejected: the queue is closed or closing; nothing was queued.
	Rejected
)

func (r PushResult) String() string {
	return [...]string{"appended", "coalesced", "evicted_oldest", "dropped_incoming", "subscriber_dropped", "rejected"}[r]
}

// DefaultQueueCapacity is DEMON's per-subscriber limit.
const DefaultQueueCapacity = 256

// QueueStats counts what happened to pushed groups.
type QueueStats struct {
	Appended, Coalesced, Evicted, DroppedIncoming, Rejected uint64
	SubscriberDropped                                       bool
}

// Queue is a bounded, non-blocking-on-push outgoing queue. It is safe for
// concurrent use by many producers and one consumer.
type Queue struct {
	mu       sync.Mutex
	items    []Group
	capacity int
	closed   bool // Close called or subscriber dropped: no more pushes
	dropped  bool // rule 4 fired and ErrSubscriberDropped not yet returned
	stats    QueueStats
	notify   chan struct{}
}

// NewQueue returns a queue holding at most capacity groups
// (DefaultQueueCapacity if capacity < 1).
func NewQueue(capacity int) *Queue {
	if capacity < 1 {
		capacity = DefaultQueueCapacity
	}
	return &Queue{capacity: capacity, items: make([]Group, 0, capacity), notify: make(chan struct{}, 1)}
}

func (q *Queue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// Push adds g following the overflow algorithm. It never blocks.
func (q *Queue) Push(g Group) PushResult {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		q.stats.Rejected++
		return Rejected
	}
	defer q.wake()
	if len(q.items) < q.capacity {
		q.items = append(q.items, g)
		q.stats.Appended++
		return Appended
	}
	// (1) coalesce with the newest queued group of the same kind.
	if g.Policy == Coalesce {
		for i := len(q.items) - 1; i >= 0; i-- {
			if q.items[i].Kind == g.Kind {
				q.items[i] = g
				q.stats.Coalesced++
				return Coalesced
			}
		}
	}
	// (2) evict the oldest droppable group.
	for i, it := range q.items {
		if it.Policy != NeverDrop {
			copy(q.items[i:], q.items[i+1:])
			q.items[len(q.items)-1] = g
			q.stats.Evicted++
			return EvictedOldest
		}
	}
	// (3) all never-drop, incoming lossy: drop it.
	if g.Policy != NeverDrop {
		q.stats.DroppedIncoming++
		return DroppedIncoming
	}
	// (4) all never-drop, incoming never-drop: drop the subscriber.
	clear(q.items)
	q.items = q.items[:0]
	q.closed = true
	q.dropped = true
	q.stats.SubscriberDropped = true
	return SubscriberDropped
}

// TryPop returns the next group without waiting. ok is false when the queue
// is empty (err nil) or finished (err ErrSubscriberDropped once, then
// ErrQueueClosed).
func (q *Queue) TryPop() (g Group, ok bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) > 0 {
		g = q.items[0]
		copy(q.items, q.items[1:])
		q.items[len(q.items)-1] = Group{}
		q.items = q.items[:len(q.items)-1]
		return g, true, nil
	}
	if q.dropped {
		q.dropped = false
		return Group{}, false, ErrSubscriberDropped
	}
	if q.closed {
		return Group{}, false, ErrQueueClosed
	}
	return Group{}, false, nil
}

// Pop waits for the next group. It returns ErrSubscriberDropped (once) after
// rule 4, ErrQueueClosed once a closed queue is drained, or ctx.Err().
func (q *Queue) Pop(ctx context.Context) (Group, error) {
	for {
		g, ok, err := q.TryPop()
		if ok || err != nil {
			return g, err
		}
		select {
		case <-ctx.Done():
			return Group{}, ctx.Err()
		case <-q.notify:
		}
	}
}

// Close stops accepting groups; Pop still delivers what is queued, then
// returns ErrQueueClosed. Close is idempotent.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.wake()
}

// Len returns the number of queued groups.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// Kinds returns the Kind of each queued group, oldest first (for tests and
// debugging).
func (q *Queue) Kinds() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]string, len(q.items))
	for i, g := range q.items {
		out[i] = g.Kind
	}
	return out
}

// Stats returns a snapshot of the counters.
func (q *Queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.stats
}
