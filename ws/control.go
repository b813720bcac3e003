package ws

import (
	"errors"
	"fmt"
)

// The control bus (protocol.md §9): operators and tools send a live session
// the same JSON messages the browser sends, plus the PCM frame a
// set_*_source or swap_source takes. The transport (an HTTP API on its own
// listener) belongs to the daemon; this is where a command meets the
// session's connection.

// ErrNoSession is returned (wrapped) by Command when no live session socket
// has the id.
var ErrNoSession = errors.New("no live session with that id")

// ErrBadCommand is returned (wrapped) by Command for a command that cannot be
// queued: malformed JSON, an unknown type, a PCM frame missing or unexpected.
var ErrBadCommand = errors.New("bad command")

// Command queues cmd (one client message, protocol.md §4.6) into the receive
// path of the session socket whose session has the given id, with pcm as its
// PCM follow-up (nil when it takes none). It returns once the command has
// been applied. params and set_prompt_blend are not applied: they are echoed
// to the browser (params_echo, prompt_blend_echo), whose own tween sends them
// back as its messages; every other command is applied as if the browser had
// sent it, and its ack goes to the browser.
func (s *Server) Command(id string, cmd, pcm []byte) error {
	c := s.connForSession(id)
	if c == nil {
		return fmt.Errorf("session %q: %w", id, ErrNoSession)
	}
	msg, err := DecodeClientMessage(cmd)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	switch {
	case msg.ExpectsPCM() && pcm == nil:
		return fmt.Errorf("%w: %s needs a PCM frame after its JSON", ErrBadCommand, msg.Type())
	case !msg.ExpectsPCM() && pcm != nil:
		return fmt.Errorf("%w: %s takes no PCM frame", ErrBadCommand, msg.Type())
	}
	switch m := msg.(type) {
	case *Params:
		c.send(ParamsEcho{Raw: m.Raw})
		return nil
	case *SetPromptBlend:
		c.send(PromptBlendEcho{Value: m.Value})
		return nil
	case *UploadTrack:
		return fmt.Errorf("%w: upload_track opens its own socket; it is not a session command", ErrBadCommand)
	}
	c.logger().Info("control-bus command", "type", msg.Type(), "pcm_bytes", len(pcm))
	c.apply(msg, pcm)
	return nil
}

// connForSession returns the live connection streaming the session id, or nil.
func (s *Server) connForSession(id string) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if sess := c.sess.Load(); sess != nil && sess.ID == id && c.ctx.Err() == nil {
			return c
		}
	}
	return nil
}
