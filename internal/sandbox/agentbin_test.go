package sandbox

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// copyExe copies this test binary to path, with modification time at.
func copyExe(t *testing.T, path string, at time.Time) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

// TestAgentBinary: the slim agent beside the server is used only when it
// is from the same build and no older than the server's binary. This test
// binary stands for both (its build information is what the running
// process reads as its own).
func TestAgentBinary(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	server := filepath.Join(dir, "atoll")
	slim := filepath.Join(dir, AgentBinaryName)
	copyExe(t, server, now)
	if got := AgentBinary(server); got != server {
		t.Errorf("no slim agent: AgentBinary = %s, want the server's own", got)
	}
	copyExe(t, slim, now.Add(-time.Hour))
	if got := AgentBinary(server); got != server {
		t.Errorf("a slim agent older than the server: AgentBinary = %s, want the server's own", got)
	}
	copyExe(t, slim, now.Add(time.Second))
	if got := AgentBinary(server); got != slim {
		t.Errorf("a slim agent of the same build: AgentBinary = %s, want %s", got, slim)
	}
	if err := os.Chmod(slim, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := AgentBinary(server); got != server {
		t.Errorf("a slim agent that cannot be executed: AgentBinary = %s, want the server's own", got)
	}
	// Another program altogether (no Go build information): passed over.
	if err := os.WriteFile(slim, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(slim, now.Add(time.Second), now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := AgentBinary(server); got != server {
		t.Errorf("a slim agent of another build: AgentBinary = %s, want the server's own", got)
	}
}
