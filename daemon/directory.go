package daemon

import (
	"errors"
	"fmt"

	"github.com/demon-audio/demon/session"
	"github.com/demon-audio/demon/ws"
)

// directory is the control API's view of live sessions: the registry lists them, and a
// command goes to the session's WebSocket connection, which applies it between the
// browser's own messages (protocol.md §9).
type directory struct {
	sessions *SessionsService
	web      *WebService
}

func (d directory) List() []SessionInfo {
	mgr := d.sessions.Manager()
	if mgr == nil {
		return nil
	}
	var out []SessionInfo
	for _, sess := range mgr.List() {
		out = append(out, infoOf(sess))
	}
	return out
}

func (d directory) Get(id string) (SessionInfo, bool) {
	mgr := d.sessions.Manager()
	if mgr == nil {
		return SessionInfo{}, false
	}
	sess, ok := mgr.Get(id)
	if !ok {
		return SessionInfo{}, false
	}
	return infoOf(sess), true
}

func infoOf(sess *session.Session) SessionInfo {
	return SessionInfo{ID: sess.ID, StartedAt: sess.StartedAt, Snapshot: sess.Snapshot()}
}

// Send queues the command into the session's connection (ws.Server.Command): params and
// set_prompt_blend are echoed to the browser, anything else is applied and acked there.
func (d directory) Send(id string, cmd, pcm []byte) error {
	srv := d.web.Server()
	if srv == nil {
		return fmt.Errorf("%q: %w", id, ErrSessionNotFound)
	}
	err := srv.Command(id, cmd, pcm)
	switch {
	case errors.Is(err, ws.ErrNoSession):
		return fmt.Errorf("%w: %w", ErrSessionNotFound, err)
	case errors.Is(err, ws.ErrBadCommand):
		return fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	return err
}
