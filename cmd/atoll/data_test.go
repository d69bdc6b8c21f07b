package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runData runs `atoll data ARGS...` and returns what it printed.
func runData(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newDataCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestDataCommands(t *testing.T) {
	dataDir := t.TempDir()
	acme := filepath.Join(dataDir, "data", "acme")
	if err := os.MkdirAll(filepath.Join(acme, "models", "v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(acme, "models", "v1", "weights.bin"), []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("v1", filepath.Join(acme, "models", "latest")); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--data-dir", dataDir, "--account", "acme"}

	out, err := runData(t, append([]string{"ls"}, flags...)...)
	if err != nil || !strings.Contains(out, "/data/models") {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	out, err = runData(t, append([]string{"ls", "-R", "models"}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/data/models/latest -> v1", "/data/models/v1/weights.bin", "10 B"} {
		if !strings.Contains(out, want) {
			t.Errorf("ls -R models lacks %q:\n%s", want, out)
		}
	}

	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := runData(t, append([]string{"get", "/data/models", dst}, flags...)...); err != nil {
		t.Fatalf("get: %v\n%s", err, out)
	}
	if data, err := os.ReadFile(filepath.Join(dst, "v1", "weights.bin")); err != nil || string(data) != "0123456789" {
		t.Errorf("copied file: %q, %v", data, err)
	}

	if _, err := runData(t, append([]string{"rm", "/data/models"}, flags...)...); err == nil {
		t.Error("rm of a directory without -r succeeded")
	}
	if _, err := runData(t, append([]string{"rm", "/data"}, flags...)...); err == nil {
		t.Error("rm /data succeeded")
	}
	if _, err := runData(t, append([]string{"rm", "-r", "/data/models"}, flags...)...); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(acme, "models")); !os.IsNotExist(err) {
		t.Errorf("models still there: %v", err)
	}

	if _, err := runData(t, "ls", "--data-dir", dataDir, "--account", "nobody"); err == nil ||
		!strings.Contains(err.Error(), "no /data") {
		t.Errorf("ls for an account without data: %v", err)
	}
	if _, err := runData(t, "ls", "/etc", "--data-dir", dataDir, "--account", "acme"); err == nil {
		t.Error("ls /etc succeeded")
	}
}

func TestDataQuotaSetting(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"", 10 << 30, false},
		{"0", -1, false},
		{"1000", 1000, false},
		{"2GiB", 2 << 30, false},
		{"lots", 0, true},
	}
	for _, tt := range tests {
		got, err := dataQuota(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("dataQuota(%q) = %d, %v; want %d (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
