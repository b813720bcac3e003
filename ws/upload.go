package ws

import (
	"fmt"
	"io"
	"time"

	"github.com/demon-audio/demon/audio"
	"github.com/gorilla/websocket"
)

// The upload socket (protocol.md §4.14): {"type":"upload_track", name,
// key?, time_signature?}, then a binary PCM frame. demon keeps ≤ 2 channels
// (mono is duplicated), truncates to MaxUploadSeconds (240 s by default),
// floors to the 9600-frame pool, refuses sources shorter than a session can
// use (audio.MinSourceFrames), and persists the track under a unique,
// sanitised name (<stem>.wav, float32, plus <stem>.json). The reply is
// upload_ok, then close 1000, or upload_failed, then close 1000 (1009 for a
// frame over MaxUploadBytes, 1013 when MaxConcurrentUploads are in progress).
//
// BPM and key detection are not available in demon: upload_ok carries bpm 0,
// the client's key override or "" and the time_signature override or "4";
// the sidecar records bpm and key as null when unknown. The stored track can
// start a session by name (use_server_fixture), with stems (mode "full").

func (c *conn) serveUpload(first []byte) {
	reply, code := c.receiveUpload(first)
	switch r := reply.(type) {
	case nil: // the client left
	case UploadFailed:
		c.uploadFailed(r.Error, code)
	default:
		if err := c.writeJSON(reply); err != nil {
			return
		}
		c.finish(outcome{code: code, reason: "upload stored"})
	}
}

// receiveUpload reads, checks and stores an upload, and returns the reply
// (UploadOK or UploadFailed, nil if the client left) and the close code. It
// holds an upload slot while it works; the slot is free again before the
// reply is sent, so a client slow to answer the close holds none.
func (c *conn) receiveUpload(first []byte) (ServerMessage, int) {
	failed := func(msg string, code int) (ServerMessage, int) { return UploadFailed{Error: msg}, code }
	m, err := DecodeUploadTrack(first)
	if err != nil {
		return failed(err.Error(), websocket.CloseNormalClosure)
	}
	if !c.s.uploads.enabled() {
		return failed("uploads are disabled on this server", websocket.CloseNormalClosure)
	}
	if !c.s.acquireUpload() {
		c.logger().Warn("upload refused: too many in progress", "max", c.s.opts.MaxConcurrentUploads)
		return failed(fmt.Sprintf("the server is busy with %d other uploads; try again in a moment", c.s.opts.MaxConcurrentUploads),
			websocket.CloseTryAgainLater)
	}
	defer c.s.releaseUpload()
	c.ws.SetReadLimit(MaxInboundMessage)
	_ = c.ws.SetReadDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	typ, r, err := c.ws.NextReader()
	if err != nil {
		c.logger().Info("upload client left before its PCM frame", "err", err)
		return nil, 0
	}
	if typ != websocket.BinaryMessage {
		return failed("expected binary PCM frame after upload header", websocket.CloseNormalClosure)
	}
	limit := c.s.opts.MaxUploadBytes
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	c.received(len(data))
	if err != nil {
		c.logger().Info("upload client left during its PCM frame", "err", err)
		return nil, 0
	}
	if int64(len(data)) > limit {
		return failed(fmt.Sprintf("PCM frame exceeds this server's limit of %d bytes", limit), websocket.CloseMessageTooBig)
	}
	ch, frames, pcm, err := DecodePCMFrame(data)
	data = nil
	if err != nil {
		return failed(err.Error(), websocket.CloseNormalClosure)
	}
	n := min(frames, int(c.s.opts.MaxUploadSeconds*audio.SampleRate))
	n -= n % audio.PoolFrames
	if n < audio.MinSourceFrames {
		return failed(fmt.Sprintf("track too short: %.2f s usable, need at least %.2f s",
			float64(max(n, 0))/audio.SampleRate, float64(audio.MinSourceFrames)/audio.SampleRate), websocket.CloseNormalClosure)
	}
	stereo := audio.Clip{SampleRate: audio.SampleRate, Channels: ch, Samples: pcm[:n*ch]}.Stereo().Samples
	meter := "4"
	if m.TimeSignature != nil {
		meter = *m.TimeSignature
	}
	dur := float64(n) / audio.SampleRate
	name, err := c.s.uploads.save(m.Name, stereo, UploadMeta{Key: m.Key, TimeSignature: meter, DurationS: dur, Samples: n, CreatedAt: time.Now().UTC()})
	if err != nil {
		c.logger().Error("persisting an upload failed", "err", err)
		return failed("could not store the upload: "+err.Error(), websocket.CloseInternalServerErr)
	}
	c.logger().Info("upload stored", "name", name, "seconds", dur)
	return UploadOK{Name: name, BPM: 0, Key: deref(m.Key), TimeSignature: meter, DurationS: dur, Samples: n}, websocket.CloseNormalClosure
}

func (c *conn) uploadFailed(msg string, code int) {
	c.logger().Info("upload failed", "err", msg)
	if err := c.writeJSON(UploadFailed{Error: msg}); err != nil {
		return
	}
	c.finish(outcome{code: code, reason: "upload failed"})
}
