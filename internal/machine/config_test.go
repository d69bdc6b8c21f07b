package machine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    map[string]Type // types to check in the catalog
		absent  []string
		wantErr string // substring; every error must also wrap ErrInvalidConfig
	}{
		{
			name: "empty document keeps the defaults",
			yaml: "",
			want: map[string]Type{
				"XS": {Name: "XS", CPUs: 0.25, MemoryBytes: 256 * MiB, Pids: DefaultPids},
				"M":  {Name: "M", CPUs: 2, MemoryBytes: 8 * GiB, Pids: DefaultPids},
			},
		},
		{
			name: "new type with binary units",
			yaml: `
machine_types:
  - name: M2
    cpus: 1.5
    memory: 3GiB
    pids: 200
`,
			want: map[string]Type{"M2": {Name: "M2", CPUs: 1.5, MemoryBytes: 3 * GiB, Pids: 200}},
		},
		{
			name: "redefining a default changes only the fields set",
			yaml: `
machine_types:
  - name: XS
    memory: 512MiB
`,
			want: map[string]Type{"XS": {Name: "XS", CPUs: 0.25, MemoryBytes: 512 * MiB, Pids: DefaultPids}},
		},
		{
			name: "GPU type and decimal units",
			yaml: `
machine_types:
  - name: GPU-L4
    cpus: 4
    memory: 16GB
    gpus: 1
    gpu_model: L4
`,
			want: map[string]Type{"GPU-L4": {Name: "GPU-L4", CPUs: 4, MemoryBytes: 16_000_000_000, Pids: DefaultPids, GPUs: 1, GPUModel: "L4"}},
		},
		{
			name: "a GPU type redefined without GPUs loses its model",
			yaml: `
machine_types:
  - name: GPU-T4
    gpus: 0
`,
			want: map[string]Type{"GPU-T4": {Name: "GPU-T4", CPUs: 4, MemoryBytes: 26 * GiB, Pids: DefaultPids}},
		},
		{
			name: "other parts of the server's file are ignored",
			yaml: `
listen: 127.0.0.1:7777
sandbox: runc
machine_types:
  - {name: T, cpus: 1, memory: 1073741824}
`,
			want: map[string]Type{"T": {Name: "T", CPUs: 1, MemoryBytes: GiB, Pids: DefaultPids}},
		},
		{name: "misspelled key", yaml: "machine_types:\n  - {name: XS, memroy: 1GiB}\n", wantErr: "unknown field(s) memroy"},
		{name: "new type without memory", yaml: "machine_types:\n  - {name: Q, cpus: 1}\n", wantErr: "new type needs memory"},
		{name: "new type without cpus", yaml: "machine_types:\n  - {name: Q, memory: 1GiB}\n", wantErr: "new type needs cpus"},
		{name: "bad memory unit", yaml: "machine_types:\n  - {name: Q, cpus: 1, memory: 8 bananas}\n", wantErr: `parse size "8 bananas"`},
		{name: "tiny memory", yaml: "machine_types:\n  - {name: Q, cpus: 1, memory: 1MiB}\n", wantErr: "memory must be at least 16 MiB"},
		{name: "zero cpus", yaml: "machine_types:\n  - {name: Q, cpus: 0, memory: 1GiB}\n", wantErr: "cpus must be more than 0"},
		{name: "bad name", yaml: "machine_types:\n  - {name: 'a b', cpus: 1, memory: 1GiB}\n", wantErr: `name "a b"`},
		{name: "defined twice", yaml: "machine_types:\n  - {name: XS, cpus: 1}\n  - {name: XS, cpus: 2}\n", wantErr: "defined twice"},
		{name: "model without gpus", yaml: "machine_types:\n  - {name: Q, cpus: 1, memory: 1GiB, gpu_model: T4}\n", wantErr: "gpu_model \"T4\" set but gpus is 0"},
		{name: "gpu index twice", yaml: "gpus:\n  - {index: 0, model: T4}\n  - {index: 0, model: T4}\n", wantErr: "index 0 declared twice"},
		{name: "gpu without model", yaml: "gpus:\n  - {index: 0}\n", wantErr: "model is required"},
		{name: "not yaml", yaml: "machine_types: [", wantErr: "yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.yaml))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("ParseConfig error = %v, want one wrapping ErrInvalidConfig containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			cat := cfg.Catalog()
			for name, want := range tt.want {
				got, err := cat.Lookup(name)
				if err != nil {
					t.Fatalf("Lookup(%s): %v", name, err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("type %s (-want +got):\n%s", name, diff)
				}
			}
			// Redefining never removes the other defaults.
			for _, d := range Defaults().Names() {
				if _, err := cat.Lookup(d); err != nil {
					t.Errorf("default type %s lost: %v", d, err)
				}
			}
		})
	}
}

func TestConfigCatalogDoesNotChangeDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte("machine_types:\n  - {name: XS, cpus: 3}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := cfg.Catalog().Lookup("XS"); got.CPUs != 3 {
		t.Fatalf("configured XS CPUs = %g, want 3", got.CPUs)
	}
	if got, _ := Defaults().Lookup("XS"); got.CPUs != 0.25 {
		t.Fatalf("Defaults() changed: XS CPUs = %g", got.CPUs)
	}
}

func TestConfigHost(t *testing.T) {
	detected := Host{CPUs: 2, MemoryBytes: 24 * GiB, GPUs: []GPU{{Index: 0, Model: "Tesla T4"}}}
	tests := []struct {
		name string
		yaml string
		want Host
	}{
		{name: "no overrides", yaml: "", want: detected},
		{
			name: "declared inventory replaces the detected one",
			yaml: "gpus:\n  - {index: 3, model: A100}\n  - {index: 1, model: A100}\n",
			want: Host{CPUs: 2, MemoryBytes: 24 * GiB, GPUs: []GPU{{1, "A100"}, {3, "A100"}}},
		},
		{
			name: "capacity overrides",
			yaml: "capacity: {cpus: 8, memory: 20GiB}\n",
			want: Host{CPUs: 8, MemoryBytes: 20 * GiB, GPUs: detected.GPUs},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, cfg.Host(detected)); diff != "" {
				t.Errorf("Host (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "atoll.yaml")
	if err := os.WriteFile(path, []byte("machine_types:\n  - {name: XS, memory: 1.5GiB}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := cfg.Catalog().Lookup("XS"); got.MemoryBytes != 3*GiB/2 {
		t.Errorf("XS memory = %d, want %d", got.MemoryBytes, 3*GiB/2)
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadConfig(missing) = %v, want ErrNotExist", err)
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
	}{
		{"8GiB", ByteSize(8 * GiB)},
		{"512MiB", ByteSize(512 * MiB)},
		{"512 MiB", ByteSize(512 * MiB)},
		{"1.5GiB", ByteSize(3 * GiB / 2)},
		{"1GB", 1_000_000_000},
		{"4096", 4096},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseByteSize(tt.in)
			if err != nil || got != tt.want {
				t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
	if _, err := ParseByteSize("lots"); err == nil {
		t.Error(`ParseByteSize("lots") succeeded`)
	}
}

func TestAccountCaps(t *testing.T) {
	cfg, err := ParseConfig([]byte("accounts:\n  max_workers: 4\n  overrides:\n    batch: {max_workers: 1}\n    team: {max_workers: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for account, want := range map[string]int{"anyone": 4, "batch": 1, "team": 0} {
		if got := cfg.MaxWorkers(account); got != want {
			t.Errorf("MaxWorkers(%q) = %d, want %d", account, got, want)
		}
	}
	if got := (Config{}).MaxWorkers("anyone"); got != 0 {
		t.Errorf("no accounts section: MaxWorkers = %d, want 0 (no cap)", got)
	}
	for _, bad := range []string{
		"accounts:\n  max_workers: -1\n",
		"accounts:\n  max_worker: 2\n",
		"accounts:\n  overrides:\n    batch: {max_workers: -2}\n",
		"accounts:\n  overrides:\n    batch: {workers: 2}\n",
	} {
		if _, err := ParseConfig([]byte(bad)); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseConfig(%q) = %v, want ErrInvalidConfig", bad, err)
		}
	}
}
