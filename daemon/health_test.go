package daemon

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/fx"
	"go.uber.org/fx/fxtest"

	"github.com/demon-audio/demon/trt/trttest"
)

func serve(h http.Handler, method, target string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec
}

func TestReadyzTransitions(t *testing.T) {
	trttest.NoLeaks(t)
	var srv *Server
	var ready *Readiness
	app := fxtest.New(t, Modules(serviceConfig(t), slog.New(slog.DiscardHandler)), fx.Populate(&srv, &ready))
	app.RequireStart()
	defer app.RequireStop()

	readyz := func() (int, ReadinessStatus) {
		rec := serve(srv.Handler(), http.MethodGet, "/readyz")
		var st ReadinessStatus
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &st), rec.Body.String())
		assert.Equal(t, "application/json; charset=utf-8", rec.Header().Get("Content-Type"))
		return rec.Code, st
	}

	code, st := readyz()
	assert.Equal(t, http.StatusOK, code, "after start: models loaded, warmup (off) passed, admission open")
	for _, c := range []string{CondAdmissionOpen, CondModelsLoaded, CondWarmupPassed} {
		ready.Condition(c).Set(false)
	}
	var changes []ReadinessStatus
	ready.OnChange(func(st ReadinessStatus) { changes = append(changes, st) })

	code, st = readyz()
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, []string{CondAdmissionOpen, CondModelsLoaded, CondWarmupPassed}, st.Failing)
	assert.Equal(t, map[string]bool{CondModelsLoaded: false, CondWarmupPassed: false, CondAdmissionOpen: false}, st.Conditions)

	ready.Condition(CondModelsLoaded).Set(true)
	ready.Condition(CondWarmupPassed).Set(true)
	code, st = readyz()
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, []string{CondAdmissionOpen}, st.Failing)

	ready.Condition(CondAdmissionOpen).Set(true)
	code, st = readyz()
	assert.Equal(t, http.StatusOK, code)
	assert.True(t, st.Ready)
	assert.Empty(t, st.Failing)

	// A module adds its own condition: not ready until it holds.
	c := ready.Condition("stems_loaded")
	assert.Same(t, c, ready.Condition("stems_loaded"))
	code, st = readyz()
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, []string{"stems_loaded"}, st.Failing)
	c.Set(true)
	c.Set(true) // no change, no notification
	code, _ = readyz()
	assert.Equal(t, http.StatusOK, code)

	// Draining closes admission again.
	ready.Condition(CondAdmissionOpen).Set(false)
	code, _ = readyz()
	assert.Equal(t, http.StatusServiceUnavailable, code)

	require.Len(t, changes, 5)
	assert.True(t, changes[3].Ready)
	assert.False(t, changes[4].Ready)

	rec := serve(srv.Handler(), http.MethodGet, "/healthz")
	assert.Equal(t, http.StatusOK, rec.Code)
	assert.Equal(t, "ok\n", rec.Body.String())
}

func TestLivenessFailsWhenAHeartbeatGoesSilent(t *testing.T) {
	l := NewLiveness()
	var now time.Duration
	l.now = func() time.Duration { return now }

	require.NoError(t, l.Check(), "nothing registered")
	a := l.Register("tick:a", 2*time.Second)
	b := l.Register("tick:b", 500*time.Millisecond)
	require.NoError(t, l.Check())

	for range 4 { // both beat every 400 ms: fine
		now += 400 * time.Millisecond
		a.Beat()
		b.Beat()
		require.NoError(t, l.Check())
	}
	now += 400 * time.Millisecond
	a.Beat()
	require.NoError(t, l.Check(), "b silent 400ms < 500ms")
	now += 200 * time.Millisecond
	err := l.Check()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "tick:b silent for 600ms (limit 500ms)")
	assert.NotContains(t, err.Error(), "tick:a")

	b.Beat()
	require.NoError(t, l.Check(), "beating again")
	now += time.Second
	b.Close()
	b.Close()
	require.NoError(t, l.Check(), "a closed loop is not hung; a is within 2s")
	now += 1500 * time.Millisecond
	require.ErrorContains(t, l.Check(), "tick:a silent for 2.7s")
	a.Close()
	require.NoError(t, l.Check())
}
