package ws

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func audioG(id string) Group {
	return Group{Kind: "audio", Policy: DropOldest, Frames: []Frame{Binary([]byte(id))}}
}
func paramsG(id string) Group {
	return Group{Kind: TypeParamsUpdate, Policy: Coalesce, Frames: []Frame{Text([]byte(id))}}
}
func ctrlG(id string) Group { return Group{Kind: id, Policy: NeverDrop} }

func drain(t *testing.T, q *Queue) []Group {
	t.Helper()
	var out []Group
	for {
		gr, ok, err := q.TryPop()
		require.NoError(t, err)
		if !ok {
			return out
		}
		out = append(out, gr)
	}
}

func ids(gs []Group) []string {
	out := make([]string, len(gs))
	for i, gr := range gs {
		if len(gr.Frames) > 0 {
			out[i] = gr.Kind + ":" + string(gr.Frames[0].Data)
		} else {
			out[i] = gr.Kind
		}
	}
	return out
}

func TestQueueBelowCapacityAppendsEverything(t *testing.T) {
	q := NewQueue(4)
	assert.Equal(t, Appended, q.Push(paramsG("1")))
	assert.Equal(t, Appended, q.Push(paramsG("2")), "no coalescing below capacity")
	assert.Equal(t, Appended, q.Push(audioG("a")))
	assert.Equal(t, []string{"params_update:1", "params_update:2", "audio:a"}, ids(drain(t, q)))
	assert.Equal(t, QueueStats{Appended: 3}, q.Stats())
}

func TestQueueRule1CoalesceReplacesNewestSameKindInPlace(t *testing.T) {
	q := NewQueue(4)
	q.Push(paramsG("1"))
	q.Push(audioG("a"))
	q.Push(paramsG("2"))
	q.Push(ctrlG("swap_ready"))
	assert.Equal(t, Coalesced, q.Push(paramsG("3")))
	assert.Equal(t, []string{"params_update:1", "audio:a", "params_update:3", "swap_ready"}, ids(drain(t, q)))
	assert.Equal(t, uint64(1), q.Stats().Coalesced)
}

func TestQueueRule1FallsThroughWithoutSameKind(t *testing.T) {
	q := NewQueue(3)
	q.Push(audioG("a"))
	q.Push(ctrlG("c1"))
	q.Push(audioG("b"))
	assert.Equal(t, EvictedOldest, q.Push(paramsG("p")), "no params queued: evict oldest droppable")
	assert.Equal(t, []string{"c1", "audio:b", "params_update:p"}, ids(drain(t, q)))
}

func TestQueueRule2EvictsOldestDroppable(t *testing.T) {
	q := NewQueue(4)
	q.Push(ctrlG("c1"))
	q.Push(audioG("a"))
	q.Push(paramsG("p"))
	q.Push(audioG("b"))
	assert.Equal(t, EvictedOldest, q.Push(audioG("c")), "audio evicts the oldest droppable (audio a)")
	assert.Equal(t, EvictedOldest, q.Push(ctrlG("c2")), "never-drop evicts the oldest droppable (params p)")
	assert.Equal(t, []string{"c1", "audio:b", "audio:c", "c2"}, ids(drain(t, q)))
	assert.Equal(t, uint64(2), q.Stats().Evicted)
}

func TestQueueRule3AllNeverDropDropsLossyIncoming(t *testing.T) {
	q := NewQueue(2)
	q.Push(ctrlG("c1"))
	q.Push(ctrlG("c2"))
	assert.Equal(t, DroppedIncoming, q.Push(audioG("a")))
	assert.Equal(t, DroppedIncoming, q.Push(paramsG("p")))
	assert.Equal(t, []string{"c1", "c2"}, q.Kinds())
	assert.Equal(t, uint64(2), q.Stats().DroppedIncoming)
	assert.False(t, q.Stats().SubscriberDropped)
}

func TestQueueRule4SubscriberDropped(t *testing.T) {
	q := NewQueue(2)
	q.Push(ctrlG("c1"))
	q.Push(ctrlG("c2"))
	assert.Equal(t, SubscriberDropped, q.Push(ctrlG("c3")))
	assert.Zero(t, q.Len(), "buffer cleared")
	assert.True(t, q.Stats().SubscriberDropped)
	assert.Equal(t, Rejected, q.Push(ctrlG("c4")), "closing: nothing more is queued")
	assert.Equal(t, Rejected, q.Push(audioG("a")))

	_, err := q.Pop(context.Background())
	require.ErrorIs(t, err, ErrSubscriberDropped, "delivered exactly once")
	_, err = q.Pop(context.Background())
	require.ErrorIs(t, err, ErrQueueClosed)
	_, ok, err := q.TryPop()
	assert.False(t, ok)
	require.ErrorIs(t, err, ErrQueueClosed)
}

func TestQueueCloseDeliversQueuedThenCloses(t *testing.T) {
	q := NewQueue(4)
	q.Push(ctrlG("c1"))
	q.Push(audioG("a"))
	q.Close()
	q.Close()
	assert.Equal(t, Rejected, q.Push(ctrlG("late")))
	ctx := context.Background()
	g1, err := q.Pop(ctx)
	require.NoError(t, err)
	assert.Equal(t, "c1", g1.Kind)
	g2, err := q.Pop(ctx)
	require.NoError(t, err)
	assert.Equal(t, "audio", g2.Kind)
	_, err = q.Pop(ctx)
	require.ErrorIs(t, err, ErrQueueClosed)
	assert.Equal(t, uint64(1), q.Stats().Rejected)
}

func TestQueuePopWaitsAndHonoursContext(t *testing.T) {
	q := NewQueue(4)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := q.Pop(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	var wg sync.WaitGroup
	wg.Add(1)
	var got Group
	go func() {
		defer wg.Done()
		got, err = q.Pop(context.Background())
	}()
	time.Sleep(5 * time.Millisecond)
	q.Push(ctrlG("wake"))
	wg.Wait()
	require.NoError(t, err)
	assert.Equal(t, "wake", got.Kind)
}

// TestQueueAudioEncodedOnlyWhenDequeued: an evicted audio group never
// touches the mirror; the client stays in sync with the mirror.
func TestQueueAudioEncodedOnlyWhenDequeued(t *testing.T) {
	src := testSignal(48000, 2, 0)
	m, err := NewMirror(2, src)
	require.NoError(t, err)
	defer m.Close()
	client := newClient(t, 2, m.AppendF16(nil))
	before := append([]float32(nil), m.Samples()...)

	q := NewQueue(2)
	mk := func(start int, phase float64) Group {
		return AudioGroup(m, EncodingDelta, PendingSlice{Start: start, Samples: testSignal(9600, 2, phase),
			Params: &ParamsUpdate{Params: map[string]any{"num_gens": int(phase)}}})
	}
	q.Push(mk(0, 1))
	q.Push(mk(9600, 2))
	assert.Equal(t, EvictedOldest, q.Push(mk(19200, 3)))
	assert.Equal(t, before, m.Samples(), "queueing encodes nothing")

	var kinds []int
	for {
		gr, ok, err := q.TryPop()
		require.NoError(t, err)
		if !ok {
			break
		}
		frames, err := gr.Materialize()
		require.NoError(t, err)
		require.Len(t, frames, 2, "slice + params_update, contiguous")
		kinds = append(kinds, frames[0].Type, frames[1].Type)
		require.NoError(t, client.Apply(frames[0].Data))
	}
	assert.Equal(t, []int{BinaryMessage, TextMessage, BinaryMessage, TextMessage}, kinds)
	assert.Equal(t, m.Samples(), client.Samples())
	assert.Equal(t, before[:2*9600], m.Samples()[:2*9600], "the evicted slice's region never changed")
}

type recorder struct{ frames []Frame }

func (r *recorder) WriteMessage(t int, b []byte) error {
	r.frames = append(r.frames, Frame{Type: t, Data: append([]byte(nil), b...)})
	return nil
}

// TestSwapGroupResetsMirrorAtWriteTime: slices queued before the swap are
// encoded against the old buffer, slices after it against the new one.
func TestSwapGroupResetsMirrorAtWriteTime(t *testing.T) {
	oldBuf := testSignal(48000, 2, 0)
	newBuf := testSignal(96000, 2, 5)
	m, err := NewMirror(2, oldBuf)
	require.NoError(t, err)
	defer m.Close()
	client := newClient(t, 2, m.AppendF16(nil))

	q := NewQueue(8)
	q.Push(AudioGroup(m, EncodingDelta, PendingSlice{Start: 0, Samples: testSignal(9600, 2, 1)}))
	stem, err := JSONGroup(StemFailed{FixtureName: "n.wav", Error: "x"})
	require.NoError(t, err)
	q.Push(SwapGroup(m, SwapReady{Duration: 2, SampleRate: 48000, Channels: 2, FixtureName: ptr("n.wav")}, newBuf, stem.Frames...))
	q.Push(AudioGroup(m, EncodingDelta, PendingSlice{Start: 48000, Samples: testSignal(9600, 2, 2)}))
	q.Close()

	var w recorder
	for {
		gr, err := q.Pop(context.Background())
		if err != nil {
			require.ErrorIs(t, err, ErrQueueClosed)
			break
		}
		frames, err := gr.Materialize()
		require.NoError(t, err)
		require.NoError(t, WriteFrames(&w, frames))
	}
	require.Len(t, w.frames, 5)
	require.NoError(t, client.Apply(w.frames[0].Data))
	assert.Equal(t, TextMessage, w.frames[1].Type)
	assert.Contains(t, string(w.frames[1].Data), `"type":"swap_ready"`)
	require.NoError(t, client.ApplyF16(2, w.frames[2].Data))
	assert.Equal(t, `{"type":"stem_failed","fixture_name":"n.wav","error":"x"}`, string(w.frames[3].Data))
	require.NoError(t, client.Apply(w.frames[4].Data))
	assert.Equal(t, 96000, m.Frames())
	assert.Equal(t, m.Samples(), client.Samples())
}

func TestJSONGroupPolicy(t *testing.T) {
	gr, err := JSONGroup(ParamsUpdate{Params: map[string]any{"num_gens": 1}})
	require.NoError(t, err)
	assert.Equal(t, Coalesce, gr.Policy)
	assert.Equal(t, TypeParamsUpdate, gr.Kind)
	gr, err = JSONGroup(StemAssets{Stems: Strings{"vocals", "instruments"}}, []byte{1}, []byte{2})
	require.NoError(t, err)
	assert.Equal(t, NeverDrop, gr.Policy)
	assert.Equal(t, []int{TextMessage, BinaryMessage, BinaryMessage}, []int{gr.Frames[0].Type, gr.Frames[1].Type, gr.Frames[2].Type})
	assert.Equal(t, "drop_oldest", DropOldest.String())
	assert.Equal(t, "subscriber_dropped", SubscriberDropped.String())
}
