package envbuild

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSandboxedBuildsStartFromTheVenvTemplate(t *testing.T) {
	requireNetwork(t)
	sb := &recordingSandbox{}
	b, uv := newTestBuilder(t, ownCache(t, Options{Sandbox: sb, SeedPip: true}))
	python := testPython(t, b)
	if _, err := b.Ensure(context.Background(), Spec{Python: python, Requirements: []string{"six"}}, nil); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if n := uv.count("venv"); n != 1 {
		t.Fatalf("uv venv ran %d times, want 1", n)
	}
	templates := dirNames(t, b.templatesDir)
	if len(templates) != 1 {
		t.Fatalf("templates/ holds %v, want one template", templates)
	}
	for _, v := range sb.get() {
		if !slices.Contains(v.Hidden, b.templatesDir) {
			t.Errorf("a build session sees the templates: hidden %v", v.Hidden)
		}
	}

	env, err := b.Ensure(context.Background(), Spec{Python: python, Requirements: []string{"six", "pip"}}, nil)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if n := uv.count("venv"); n != 1 {
		t.Errorf("uv venv ran %d times, want 1: the second venv is the template's copy", n)
	}
	out, err := runPython(t, env, nil, "import sys, six, pip; print(sys.prefix != sys.base_prefix, sys.prefix)")
	if want := "True " + env.Dir; err != nil || out != want {
		t.Errorf("the copied venv: %v: %q, want %q", err, out, want)
	}
	// The template's files are what uv made, not the venv's since.
	if _, err := os.Stat(filepath.Join(b.templatesDir, templates[0], "lib")); err != nil {
		t.Error(err)
	}
	if matches, _ := filepath.Glob(filepath.Join(b.templatesDir, templates[0], "lib", "*", "site-packages", "*")); len(matches) != 0 {
		t.Errorf("the template holds packages: %v", matches)
	}
}

func TestNewRemovesPartialTemplates(t *testing.T) {
	b, _ := newTestBuilder(t, Options{})
	part := filepath.Join(b.templatesDir, "abc.t.123")
	if err := os.MkdirAll(filepath.Join(part, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	b2, err := New(Options{Root: b.root, CacheDir: b.cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Errorf("a partial template survived New: %v", err)
	}
}
