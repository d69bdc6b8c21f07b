package envbuild

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// stepRecorder is a recordingSandbox whose sessions also record the
// steps they run.
type stepRecorder struct {
	recordingSandbox
	mu    sync.Mutex
	steps [][]string
}

func (r *stepRecorder) Open(ctx context.Context, v BuildView) (BuildSession, error) {
	s, err := r.recordingSandbox.Open(ctx, v)
	return recordedSession{s, r}, err
}

type recordedSession struct {
	BuildSession
	r *stepRecorder
}

func (s recordedSession) Run(ctx context.Context, dir string, args []string, out func(string)) error {
	s.r.mu.Lock()
	s.r.steps = append(s.r.steps, slices.Clone(args))
	s.r.mu.Unlock()
	return s.BuildSession.Run(ctx, dir, args, out)
}

// compiles counts the steps that ran the compiler.
func (r *stepRecorder) compiles() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.steps {
		if slices.Contains(s, compileScript) {
			n++
		}
	}
	return n
}

func TestBytecodeIsSharedThroughTheCache(t *testing.T) {
	requireNetwork(t)
	sb := &stepRecorder{}
	b, _ := newTestBuilder(t, ownCache(t, Options{Sandbox: sb, SeedPip: true, CompileBytecode: true}))
	spec := Spec{Python: testPython(t, b), Requirements: []string{"six"}}
	first, err := b.Ensure(context.Background(), spec, nil)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if n := sb.compiles(); n != 1 {
		t.Fatalf("the first build compiled %d times, want 1", n)
	}
	pyc := func(env Env) (string, os.FileInfo) {
		t.Helper()
		out, err := runPython(t, env, nil, "import six, importlib.util as u; print(u.cache_from_source(six.__file__))")
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatalf("six's bytecode: %v", err)
		}
		return out, fi
	}
	_, firstPyc := pyc(first)
	linked, _ := filepath.Glob(filepath.Join(b.cacheDir, uvArchiveDir, "*", "__pycache__", "six.*.pyc"))
	if len(linked) != 1 {
		t.Fatalf("bytecode in the cache: %v, want six's", linked)
	}
	if fi, err := os.Stat(linked[0]); err != nil || !os.SameFile(fi, firstPyc) {
		t.Errorf("the cache's %s is not the venv's bytecode", linked[0])
	}

	if _, err := b.Prune(0, 1); err != nil {
		t.Fatal(err)
	}
	second, err := b.Ensure(context.Background(), spec, nil)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if n := sb.compiles(); n != 1 {
		t.Errorf("the second build compiled again (%d compiles), though its bytecode came linked", n)
	}
	path, fi := pyc(second)
	if !os.SameFile(fi, firstPyc) {
		t.Errorf("second venv's %s is not the shared bytecode", path)
	}
	// Python uses it as it is: importing does not rewrite it.
	if _, err := runPython(t, second, nil, "import six"); err != nil {
		t.Fatal(err)
	}
	if after, err := os.Stat(path); err != nil || !os.SameFile(after, firstPyc) || !after.ModTime().Equal(fi.ModTime()) {
		t.Errorf("importing six rewrote its bytecode: %v", err)
	}
}

func TestBytecodeCurrent(t *testing.T) {
	dir := t.TempDir()
	py := filepath.Join(dir, "m.py")
	if err := os.WriteFile(py, []byte("x = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if bytecodeCurrent(py, "cpython-311") {
		t.Error("no bytecode, yet current")
	}
	fi, _ := os.Stat(py)
	header := func(flags, mtime, size uint32) []byte {
		h := []byte{0xa7, 0x0d, 0x0d, 0x0a}
		for _, v := range []uint32{flags, mtime, size} {
			h = append(h, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
		}
		return h
	}
	os.Mkdir(filepath.Join(dir, "__pycache__"), 0o755)
	pyc := filepath.Join(dir, "__pycache__", "m.cpython-311.pyc")
	for _, c := range []struct {
		h    []byte
		want bool
	}{
		{header(0, uint32(fi.ModTime().Unix()), uint32(fi.Size())), true},
		{header(0, uint32(fi.ModTime().Unix())+1, uint32(fi.Size())), false},
		{header(0, uint32(fi.ModTime().Unix()), uint32(fi.Size())+1), false},
		{header(1, 0, 0), false}, // hash-based: not what a linked source validates
		{[]byte{1, 2, 3}, false},
	} {
		os.WriteFile(pyc, c.h, 0o644)
		if got := bytecodeCurrent(py, "cpython-311"); got != c.want {
			t.Errorf("header %x: current = %v, want %v", c.h, got, c.want)
		}
	}
	if cacheTag("3.11.7") != "cpython-311" || cacheTag("3") != "" {
		t.Errorf("cacheTag = %q, %q", cacheTag("3.11.7"), cacheTag("3"))
	}
}
