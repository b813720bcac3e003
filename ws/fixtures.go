package ws

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/demon-audio/demon/audio"
)

// Server-side sources: the built-in fixtures (by default demon's synthesised
// demo catalogue) and user uploads persisted on disk. Both are addressed by
// a bare file name that must be in the known list: names are never joined
// onto a path without passing validName and the allow-list first.

// Fixtures provides the built-in tracks a session can use by name
// (use_server_fixture) and that /fixtures/<name> serves.
type Fixtures interface {
	// Names returns the fixture names, sorted.
	Names() []string
	// Load returns a fixture as interleaved stereo float32 at 48 kHz. The
	// caller must not modify the result.
	Load(name string) ([]float32, error)
}

// ErrUnknownFixture is returned for a name that is not a known fixture or
// upload.
var ErrUnknownFixture = errors.New("unknown fixture")

// demoFixtures is the default provider: the demo catalogue, each track
// synthesised once on first use and cached for the process.
type demoFixtures struct {
	mu    sync.Mutex
	cache map[string]*demoEntry
}

type demoEntry struct {
	once sync.Once
	pcm  []float32
	err  error
}

var defaultDemo = &demoFixtures{cache: map[string]*demoEntry{}}

// DemoFixtures returns the provider of demon's synthesised demo tracks
// (audio.Catalogue); each is rendered once per process and cached.
func DemoFixtures() Fixtures { return defaultDemo }

func (d *demoFixtures) Names() []string { return audio.Catalogue() }

func (d *demoFixtures) Load(name string) ([]float32, error) {
	if !slices.Contains(audio.Catalogue(), name) {
		return nil, fmt.Errorf("%w %q", ErrUnknownFixture, name)
	}
	d.mu.Lock()
	e := d.cache[name]
	if e == nil {
		e = &demoEntry{}
		d.cache[name] = e
	}
	d.mu.Unlock()
	e.once.Do(func() { e.pcm, e.err = audio.SynthesizeDemo(name) })
	return e.pcm, e.err
}

// ---- uploads ----------------------------------------------------------------

// uploadNameRE is the shape of a persisted upload name: a sanitised stem and
// the .wav extension. Anything else is refused before touching the disk.
var uploadNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\.wav$`)

// validName reports whether a (decoded) track name is a plain file name
// that cannot escape a folder: no separators, no "..", no NUL, not hidden.
func validName(name string) bool {
	return name != "" && len(name) <= 255 && !strings.ContainsAny(name, "/\\\x00") &&
		!strings.Contains(name, "..") && !strings.HasPrefix(name, ".") && !filepath.IsAbs(name)
}

// UploadMeta is the JSON sidecar persisted next to an upload's WAV.
type UploadMeta struct {
	Name          string    `json:"name"`
	OriginalName  string    `json:"original_name"`
	BPM           *int      `json:"bpm"`
	Key           *string   `json:"key"`
	TimeSignature string    `json:"time_signature"`
	DurationS     float64   `json:"duration_s"`
	Samples       int       `json:"samples"`
	CreatedAt     time.Time `json:"created_at"`
}

// uploadStore persists uploads as <name>.wav (float32) + <name>.json under
// dir. An empty dir disables uploads.
type uploadStore struct {
	dir string
	mu  sync.Mutex // serialises name allocation
}

func (u *uploadStore) enabled() bool { return u.dir != "" }

// Names lists persisted uploads (WAVs with a valid name), sorted.
func (u *uploadStore) Names() []string {
	if !u.enabled() {
		return []string{}
	}
	ents, err := os.ReadDir(u.dir)
	if err != nil {
		return []string{}
	}
	out := []string{}
	for _, e := range ents {
		if e.Type().IsRegular() && uploadNameRE.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}

// has reports whether name is a persisted upload.
func (u *uploadStore) has(name string) bool {
	if !u.enabled() || !uploadNameRE.MatchString(name) || !validName(name) {
		return false
	}
	st, err := os.Stat(filepath.Join(u.dir, name))
	return err == nil && st.Mode().IsRegular()
}

// path returns the file of a known upload ("" when unknown).
func (u *uploadStore) path(name string) string {
	if !u.has(name) {
		return ""
	}
	return filepath.Join(u.dir, name)
}

// Load reads an upload as interleaved stereo at 48 kHz.
func (u *uploadStore) Load(name string) ([]float32, error) {
	p := u.path(name)
	if p == "" {
		return nil, fmt.Errorf("%w %q", ErrUnknownFixture, name)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return audio.LoadStereo48k(f)
}

// sanitizeStem turns a client-supplied track name into a safe file stem:
// the base name without extension, characters outside [A-Za-z0-9._-]
// replaced by '_', at most 64 bytes, never empty or hidden.
func sanitizeStem(name string) string {
	name = strings.ReplaceAll(name, "\\", "/")
	name = name[strings.LastIndex(name, "/")+1:]
	if ext := filepath.Ext(name); ext != "" {
		name = strings.TrimSuffix(name, ext)
	}
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.Trim(b.String(), "_.-")
	for strings.Contains(s, "__") {
		s = strings.ReplaceAll(s, "__", "_")
	}
	if len(s) > 64 {
		s = s[:64]
	}
	if s == "" {
		s = "upload"
	}
	return s
}

// save persists stereo PCM under a unique name derived from original and
// returns that name. The WAV is written to a temporary file and renamed, so
// a listed upload is always complete.
func (u *uploadStore) save(original string, pcm []float32, meta UploadMeta) (string, error) {
	if !u.enabled() {
		return "", errors.New("uploads are disabled on this server")
	}
	if err := os.MkdirAll(u.dir, 0o755); err != nil {
		return "", err
	}
	stem := sanitizeStem(original)
	u.mu.Lock()
	defer u.mu.Unlock()
	name := ""
	for i := 1; i < 10000; i++ {
		cand := stem + ".wav"
		if i > 1 {
			cand = fmt.Sprintf("%s-%d.wav", stem, i)
		}
		if _, err := os.Stat(filepath.Join(u.dir, cand)); errors.Is(err, fs.ErrNotExist) {
			name = cand
			break
		}
	}
	if name == "" {
		return "", fmt.Errorf("no free name for upload %q", stem)
	}
	tmp, err := os.CreateTemp(u.dir, ".upload-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := audio.EncodeWAV(tmp, pcm, 2, audio.SampleRate, audio.WAVFloat32); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	meta.Name = name
	meta.OriginalName = original
	js, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(u.dir, strings.TrimSuffix(name, ".wav")+".json"), js, 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(u.dir, name)); err != nil {
		return "", err
	}
	return name, nil
}
