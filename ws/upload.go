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
	m, err := DecodeUploadTrack(first)
	if err != nil {
		c.uploadFailed(err.Error(), websocket.CloseNormalClosure)
		return
	}
	if !c.s.uploads.enabled() {
		c.uploadFailed("uploads are disabled on this server", websocket.CloseNormalClosure)
		return
	}
	if !c.s.acquireUpload() {
		c.logger().Warn("upload refused: too many in progress", "max", c.s.opts.MaxConcurrentUploads)
		c.uploadFailed(fmt.Sprintf("the server is busy with %d other uploads; try again in a moment", c.s.opts.MaxConcurrentUploads),
			websocket.CloseTryAgainLater)
		return
	}
	defer c.s.releaseUpload()
	c.ws.SetReadLimit(MaxInboundMessage)
	_ = c.ws.SetReadDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	typ, r, err := c.ws.NextReader()
	if err != nil {
		c.logger().Info("upload client left before its PCM frame", "err", err)
		return
	}
	if typ != websocket.BinaryMessage {
		c.uploadFailed("expected binary PCM frame after upload header", websocket.CloseNormalClosure)
		return
	}
	limit := c.s.opts.MaxUploadBytes
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	c.received(len(data))
	if err != nil {
		c.logger().Info("upload client left during its PCM frame", "err", err)
		return
	}
	if int64(len(data)) > limit {
		c.uploadFailed(fmt.Sprintf("PCM frame exceeds this server's limit of %d bytes", limit), websocket.CloseMessageTooBig)
		return
	}
	ch, frames, pcm, err := DecodePCMFrame(data)
	data = nil
	if err != nil {
		c.uploadFailed(err.Error(), websocket.CloseNormalClosure)
		return
	}
	n := min(frames, int(c.s.opts.MaxUploadSeconds*audio.SampleRate))
	n -= n % audio.PoolFrames
	if n < audio.MinSourceFrames {
		c.uploadFailed(fmt.Sprintf("track too short: %.2f s usable, need at least %.2f s",
			float64(max(n, 0))/audio.SampleRate, float64(audio.MinSourceFrames)/audio.SampleRate), websocket.CloseNormalClosure)
		return
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
		c.uploadFailed("could not store the upload: "+err.Error(), websocket.CloseInternalServerErr)
		return
	}
	c.logger().Info("upload stored", "name", name, "seconds", dur)
	if err := c.writeJSON(UploadOK{Name: name, BPM: 0, Key: deref(m.Key), TimeSignature: meter, DurationS: dur, Samples: n}); err != nil {
		return
	}
	c.finish(outcome{code: websocket.CloseNormalClosure, reason: "upload stored"})
}

func (c *conn) uploadFailed(msg string, code int) {
	c.logger().Info("upload failed", "err", msg)
	if err := c.writeJSON(UploadFailed{Error: msg}); err != nil {
		return
	}
	c.finish(outcome{code: code, reason: "upload failed"})
}
