package envbuild

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestASecondBuilderOnARootFindsNothingAgain(t *testing.T) {
	first, _ := newTestBuilder(t, Options{})
	python := testPython(t, first)
	want, err := first.interpreter(context.Background(), python)
	if err != nil {
		t.Fatal(err)
	}
	second, err := New(Options{Root: first.root, CacheDir: first.cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if n := second.uvCalls.Load(); n != 0 {
		t.Errorf("New ran uv %d times on a Root that knew it", n)
	}
	if second.uv != first.uv || second.uvVersion != first.uvVersion {
		t.Errorf("uv = %s %s, want %s %s", second.uv, second.uvVersion, first.uv, first.uvVersion)
	}
	got, err := second.interpreter(context.Background(), python)
	if err != nil {
		t.Fatal(err)
	}
	if got != want || second.uvCalls.Load() != 0 {
		t.Errorf("interpreter = %+v after %d uv runs, want %+v found without uv", got, second.uvCalls.Load(), want)
	}

	// Forgotten after it failed to make a venv: the next process finds it.
	second.forgetInterpreter(python)
	third, err := New(Options{Root: first.root, CacheDir: first.cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if _, err := third.interpreter(context.Background(), python); err != nil {
		t.Fatal(err)
	}
	if third.uvCalls.Load() == 0 {
		t.Error("a forgotten interpreter was not found again")
	}
}

func TestAFileFactHoldsWhileTheFileIsUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "python")
	if err := os.WriteFile(path, []byte("one"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, ok := factOf(path)
	if !ok || !f.current() {
		t.Fatalf("a fresh fact is not current: %+v", f)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if f.current() {
		t.Error("a rewritten file's fact is still current")
	}
	f, _ = factOf(path)
	f.Found = time.Now().Add(-hostFactsTTL - time.Second)
	if f.current() {
		t.Error("an expired fact is still current")
	}
	os.Remove(path)
	if f, _ = factOf(path); f.current() {
		t.Error("a missing file's fact is current")
	}
}
