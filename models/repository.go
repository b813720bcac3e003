package models

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/demon-audio/demon/trt"
)

// ManifestFile is the repository's index at its root.
const ManifestFile = "repository.json"

// Manifest names the engines of each profile. Engine names are folder names under the
// root: `<root>/<name>/<name>.engine` plus `<name>.engine.metadata.json`, as in DEMON.
type Manifest struct {
	SchemaVersion int       `json:"schema_version"`
	Profiles      []Profile `json:"profiles"`
}

// Profile is a set of engines, one per component, that serve sources up to DurationS.
type Profile struct {
	Name      string            `json:"name"`
	DurationS int               `json:"duration_s"`
	Engines   map[string]string `json:"engines"` // component -> engine name
}

var engineNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,127}$`)

// Repository is an opened model repository. Opening reads only the manifest; engines are
// validated when a profile is resolved.
type Repository struct {
	root     string
	manifest Manifest
	// BuildCommand is suggested in errors for a missing or stale engine.
	BuildCommand string
}

// Open reads and validates the manifest of the repository at root.
func Open(root string) (*Repository, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("model repository %s: %w", root, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	data, err := os.ReadFile(filepath.Join(abs, ManifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: model repository %s has no %s (build one with `demond models build-reference --out %s`)", ErrNotFound, root, ManifestFile, root)
	}
	if err != nil {
		return nil, fmt.Errorf("model repository %s: %w", root, err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("model repository %s: %w", root, err)
	}
	return &Repository{root: abs, manifest: m, BuildCommand: "demond models build-reference --out " + root}, nil
}

// ParseManifest decodes and validates a manifest.
func ParseManifest(data []byte) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("%w: %s is not valid JSON: %v", ErrCorrupt, ManifestFile, err)
	}
	if m.SchemaVersion != SchemaVersion {
		return Manifest{}, fmt.Errorf("%w: %s schema_version %d, this build reads %d", ErrMismatch, ManifestFile, m.SchemaVersion, SchemaVersion)
	}
	if len(m.Profiles) == 0 {
		return Manifest{}, fmt.Errorf("%w: %s lists no profiles", ErrCorrupt, ManifestFile)
	}
	seen := map[string]bool{}
	for _, p := range m.Profiles {
		if p.Name == "" || seen[p.Name] {
			return Manifest{}, fmt.Errorf("%w: profile name %q empty or repeated", ErrCorrupt, p.Name)
		}
		seen[p.Name] = true
		if p.DurationS <= 0 || p.DurationS > 240 {
			return Manifest{}, fmt.Errorf("%w: profile %s: duration_s %d outside 1..240", ErrCorrupt, p.Name, p.DurationS)
		}
		for _, c := range Components {
			name, ok := p.Engines[c]
			if !ok {
				return Manifest{}, fmt.Errorf("%w: profile %s has no %s engine", ErrCorrupt, p.Name, c)
			}
			if !engineNameRE.MatchString(name) || strings.Contains(name, "..") {
				return Manifest{}, fmt.Errorf("%w: profile %s: engine name %q (want lowercase letters, digits, _ . -)", ErrEscape, p.Name, name)
			}
		}
		for c := range p.Engines {
			if !slices.Contains(Components, c) {
				return Manifest{}, fmt.Errorf("%w: profile %s names unknown component %q", ErrCorrupt, p.Name, c)
			}
		}
	}
	return m, nil
}

// Root returns the repository's absolute root.
func (r *Repository) Root() string { return r.root }

// Profiles returns the profile names, shortest duration first.
func (r *Repository) Profiles() []Profile {
	ps := slices.Clone(r.manifest.Profiles)
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].DurationS < ps[j].DurationS })
	return ps
}

// Profile returns the named profile.
func (r *Repository) Profile(name string) (Profile, error) {
	for _, p := range r.manifest.Profiles {
		if p.Name == name {
			return p, nil
		}
	}
	names := make([]string, 0, len(r.manifest.Profiles))
	for _, p := range r.manifest.Profiles {
		names = append(names, p.Name)
	}
	return Profile{}, fmt.Errorf("%w: no profile %q in %s (have %s)", ErrNotFound, name, r.root, strings.Join(names, ", "))
}

// EngineRef is a validated engine: its file, sidecar, and the checks they passed.
type EngineRef struct {
	Component string
	Name      string
	Path      string
	Meta      Metadata
}

// Resolve validates every engine of profile p for this build: files present inside the
// root, sidecar well formed and matching the component contract and profile duration,
// backend supported, the engine file's size and SHA-256 equal to the sidecar's, and the
// sidecar's tensors equal to the I/O table the engine file declares (read from its header).
// It allocates nothing on any device.
func (r *Repository) Resolve(p Profile, backendSupported func(backend string) error) ([]EngineRef, error) {
	refs := make([]EngineRef, 0, len(Components))
	for _, c := range Components {
		ref, err := r.resolveOne(c, p.Engines[c], p.DurationS, backendSupported)
		if err != nil {
			return nil, fmt.Errorf("profile %s, %s engine %s: %w", p.Name, c, p.Engines[c], err)
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

func (r *Repository) resolveOne(component, name string, durationS int, backendSupported func(string) error) (EngineRef, error) {
	enginePath, err := r.inside(filepath.Join(name, name+".engine"))
	if err != nil {
		return EngineRef{}, err
	}
	sidecar := enginePath + ".metadata.json"
	if _, err := r.inside(filepath.Join(name, name+".engine.metadata.json")); err != nil {
		return EngineRef{}, err
	}
	data, err := os.ReadFile(sidecar)
	if errors.Is(err, fs.ErrNotExist) {
		return EngineRef{}, fmt.Errorf("%w: missing %s (rebuild with `%s`)", ErrNotFound, sidecar, r.BuildCommand)
	}
	if err != nil {
		return EngineRef{}, err
	}
	meta, err := ParseMetadata(data)
	if err != nil {
		return EngineRef{}, fmt.Errorf("%s: %w", sidecar, err)
	}
	if err := meta.CheckContract(component, durationS); err != nil {
		return EngineRef{}, err
	}
	if err := backendSupported(meta.Backend); err != nil {
		return EngineRef{}, err
	}
	if meta.Backend == BackendCPURef && meta.BackendVersion != CPURefVersion {
		return EngineRef{}, fmt.Errorf("%w: built for %s %s, this build loads %s (rebuild with `%s`)", ErrMismatch, meta.Backend, meta.BackendVersion, CPURefVersion, r.BuildCommand)
	}
	if err := verifyFile(enginePath, meta.EngineBytes, meta.EngineSHA256); err != nil {
		return EngineRef{}, err
	}
	ref := EngineRef{Component: component, Name: name, Path: enginePath, Meta: meta}
	// The sidecar must describe the engine the file declares: read the engine's I/O table
	// from its header (no device, nothing allocated) and compare.
	io, err := trt.InspectEngine(trt.EngineOptions{Path: enginePath, Component: component, Backend: meta.Backend, BackendVersion: meta.BackendVersion})
	if err != nil {
		return EngineRef{}, err
	}
	if err := crossCheck(ref, io); err != nil {
		return EngineRef{}, err
	}
	return ref, nil
}

// inside joins rel to the root and refuses anything that resolves outside it, including
// through symbolic links.
func (r *Repository) inside(rel string) (string, error) {
	if filepath.IsAbs(rel) {
		return "", fmt.Errorf("%w: %s is absolute", ErrEscape, rel)
	}
	p := filepath.Join(r.root, rel)
	if !within(r.root, p) {
		return "", fmt.Errorf("%w: %s", ErrEscape, rel)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w: missing %s (rebuild with `%s`)", ErrNotFound, p, r.BuildCommand)
		}
		return "", err
	}
	if !within(r.root, real) {
		return "", fmt.Errorf("%w: %s resolves to %s", ErrEscape, rel, real)
	}
	return p, nil
}

func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

func verifyFile(path string, size int64, sum string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != size {
		return fmt.Errorf("%w: %s is %d bytes, the sidecar says %d (truncated or replaced)", ErrCorrupt, path, st.Size(), size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Errorf("%w: %s checksum mismatch: sha256 %s, the sidecar says %s", ErrCorrupt, path, got, sum)
	}
	return nil
}
