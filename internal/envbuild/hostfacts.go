package envbuild

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// hostFacts is what finding uv and the interpreters taught a builder,
// kept in Root/host.json for the next process on this Root (an `atoll
// envs build`, a restarted server). Finding them is most of a warm
// build's time where they sit behind wrappers: a pyenv shim costs about
// 200 ms per run, and `uv python find` runs every python on PATH, shims
// included (0.25–0.45 s on a host with pyenv, ~30 ms without).
//
// A fact holds while the file it names is unchanged (same size and
// modification time: an upgrade in place rewrites it) and for at most
// hostFactsTTL, after which it is found again, so a Python or uv
// installed later that PATH prefers is picked up within that time, as a
// restart picked it up before. The file is written by this process's user
// into Root, which builds cannot write (only their own directories and the
// cache are theirs).
type hostFacts struct {
	// UV is the real uv binary behind Wrapper (the configured uv, a
	// script), or the configured binary itself.
	Wrapper   string   `json:"wrapper"`
	UV        fileFact `json:"uv"`
	UVVersion string   `json:"uv_version"`
	// Pythons are the interpreters found, by major.minor.
	Pythons map[string]pythonFact `json:"pythons"`
}

type pythonFact struct {
	interpreter
	File fileFact `json:"file"`
}

// fileFact identifies one version of a file.
type fileFact struct {
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mod_time"`
	Found   time.Time `json:"found"`
}

// hostFactsTTL bounds how long a remembered fact is trusted.
const hostFactsTTL = time.Hour

const hostFactsFile = "host.json"

// factOf describes path as it is now; ok is false if it cannot be read.
func factOf(path string) (fileFact, bool) {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return fileFact{}, false
	}
	return fileFact{Path: path, Size: fi.Size(), ModTime: fi.ModTime(), Found: time.Now()}, true
}

// current reports whether f still describes its file and is recent enough.
func (f fileFact) current() bool {
	if f.Path == "" || time.Since(f.Found) > hostFactsTTL || time.Until(f.Found) > time.Minute {
		return false
	}
	now, ok := factOf(f.Path)
	return ok && now.Size == f.Size && now.ModTime.Equal(f.ModTime)
}

// factStore reads and writes Root/host.json. Several processes may share
// it: each write replaces the file whole, and the last one wins, which at
// worst makes another process find something again.
type factStore struct {
	path string
	mu   sync.Mutex
	f    hostFacts
}

func openFactStore(root string) *factStore {
	s := &factStore{path: filepath.Join(root, hostFactsFile)}
	if data, err := os.ReadFile(s.path); err == nil {
		json.Unmarshal(data, &s.f) // unreadable facts are found again
	}
	if s.f.Pythons == nil {
		s.f.Pythons = map[string]pythonFact{}
	}
	return s
}

// uv returns the remembered real uv binary and its version for the
// configured uv, if still current.
func (s *factStore) uv(configured string) (path, version string, ok bool) {
	s.mu.Lock()
	f := s.f
	s.mu.Unlock()
	if f.Wrapper != configured || f.UVVersion == "" || !f.UV.current() {
		return "", "", false
	}
	return f.UV.Path, f.UVVersion, true
}

func (s *factStore) setUV(configured, path, version string) {
	fact, ok := factOf(path)
	if !ok {
		return
	}
	s.update(func(f *hostFacts) {
		if f.Wrapper != configured || f.UV.Path != path || f.UVVersion != version {
			// Another uv: what it found of interpreters is its own.
			f.Pythons = map[string]pythonFact{}
		}
		f.Wrapper, f.UV, f.UVVersion = configured, fact, version
	})
}

// python returns the remembered interpreter for major.minor want.
func (s *factStore) python(want string) (interpreter, bool) {
	s.mu.Lock()
	p, ok := s.f.Pythons[want]
	s.mu.Unlock()
	if !ok || p.File.Path != p.Executable || !p.File.current() {
		return interpreter{}, false
	}
	return p.interpreter, true
}

func (s *factStore) setPython(want string, py interpreter) {
	fact, ok := factOf(py.Executable)
	if !ok {
		return
	}
	s.update(func(f *hostFacts) { f.Pythons[want] = pythonFact{interpreter: py, File: fact} })
}

func (s *factStore) forgetPython(want string) {
	s.update(func(f *hostFacts) { delete(f.Pythons, want) })
}

// update changes the facts and writes them; a failed write only costs a
// later process the finding.
func (s *factStore) update(change func(*hostFacts)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	change(&s.f)
	data, err := json.MarshalIndent(s.f, "", "  ")
	if err != nil {
		return
	}
	tmp := s.path + "." + tmpName("w")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return
	}
	if err := os.Rename(tmp, s.path); err != nil {
		os.Remove(tmp)
	}
}
