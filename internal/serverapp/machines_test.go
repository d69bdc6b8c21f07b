package serverapp

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A broken nvidia-smi (installed, failing) never stops the server: GPUs
// the config declares are used; without any, the server warns and serves
// with none.
func TestBrokenGPUDetectionDoesNotStopTheServer(t *testing.T) {
	bin := t.TempDir()
	smi := "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver' >&2\nexit 9\n"
	if err := os.WriteFile(filepath.Join(bin, "nvidia-smi"), []byte(smi), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	declared := filepath.Join(t.TempDir(), "machines.yaml")
	if err := os.WriteFile(declared, []byte("gpus:\n  - index: 0\n    model: Tesla T4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		file     string
		wantGPUs int
		wantLog  string
	}{
		{name: "declared GPUs are used", file: declared, wantGPUs: 1, wantLog: "using the GPUs the config declares"},
		{name: "none declared: a warning and no GPUs", wantGPUs: 0, wantLog: "level=WARN msg=\"GPU detection failed; serving with no GPUs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			a := &app{cfg: Config{MachinesFile: tc.file}, log: slog.New(slog.NewTextHandler(&logs, nil))}
			if err := a.loadMachines(context.Background()); err != nil {
				t.Fatalf("loadMachines: %v", err)
			}
			if got := len(a.capacity.Host().GPUs); got != tc.wantGPUs {
				t.Errorf("host has %d GPUs, want %d", got, tc.wantGPUs)
			}
			if !strings.Contains(logs.String(), tc.wantLog) || !strings.Contains(logs.String(), "could not communicate") {
				t.Errorf("log %q lacks %q and nvidia-smi's message", logs.String(), tc.wantLog)
			}
		})
	}
}
