// Package ws is demon's wire codec for DEMON's browser protocol
// (shared/spec/protocol.md): the session config, PCM frames, client
// messages with their knobs, server messages, audio slice frames with the
// float16 delta mirror, and the per-connection outgoing queue with DEMON's
// drop policies.
//
// The package does no I/O and imports no fx; a server builds on it:
//
//	kind, _ := ws.FirstMessageKind(first)       // session or upload socket
//	cfg, err := ws.ParseSessionConfig(first)    // on error: Error JSON, close 1011
//	ch, frames, pcm, err := ws.DecodePCMFrame(b) // unless cfg.UseServerFixture
//	m, _ := ws.NewMirror(ch, playbackBuffer)     // after audio.NormalizeSource
//	q := ws.NewQueue(ws.DefaultQueueCapacity)    // one writer goroutine pops
//	q.Push(ws.AudioGroup(m, cfg.SliceEncoding, slice))
//	msg, err := ws.DecodeClientMessage(text)     // *UnknownTypeError → NotSupportedFor
//
// Encoding happens on the writer goroutine (AudioGroup/SwapGroup render at
// dequeue), so the mirror is only advanced for slices that are sent.
package ws
