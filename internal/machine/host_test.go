package machine

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNvidiaSMI(t *testing.T) {
	out := []byte("1, NVIDIA A100-SXM4-40GB\n0, Tesla T4\n\n")
	got, err := parseNvidiaSMI(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []GPU{{0, "Tesla T4"}, {1, "NVIDIA A100-SXM4-40GB"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := parseNvidiaSMI([]byte("No devices were found\n")); err == nil {
		t.Error("want an error for unexpected output")
	}
}

func TestGPUModelMatches(t *testing.T) {
	tests := []struct {
		model, name string
		want        bool
	}{
		{"T4", "Tesla T4", true},
		{"t4", "Tesla T4", true},
		{"A100", "NVIDIA A100-SXM4-40GB", true},
		{"A100", "A100", true},
		{"L4", "NVIDIA L40S", false},
		{"A10", "NVIDIA A100-PCIE-40GB", false},
		{"RTX 4090", "NVIDIA GeForce RTX 4090", true},
		{"RTX 4090", "NVIDIA GeForce RTX 4080", false},
		{"", "anything", true},
	}
	for _, tt := range tests {
		t.Run(tt.model+"/"+tt.name, func(t *testing.T) {
			if got := GPUModelMatches(tt.model, tt.name); got != tt.want {
				t.Errorf("GPUModelMatches(%q, %q) = %v, want %v", tt.model, tt.name, got, tt.want)
			}
		})
	}
}

func TestHostString(t *testing.T) {
	h := Host{CPUs: 2, MemoryBytes: 24684092 * 1024, GPUs: []GPU{{0, "T4"}, {1, "T4"}, {2, "A100"}}}
	if got, want := h.String(), "2 CPU, 23.5 GiB, 2×T4 GPU, 1×A100 GPU"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := (Host{CPUs: 0.5, MemoryBytes: 512 * MiB}).String(), "0.5 CPU, 512 MiB, no GPU"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestDetectHost(t *testing.T) {
	h, err := DetectHost(context.Background())
	if err != nil {
		t.Fatalf("DetectHost: %v", err)
	}
	if h.CPUs <= 0 || h.MemoryBytes <= 0 {
		t.Fatalf("DetectHost = %+v, want positive CPUs and memory", h)
	}
	t.Logf("this host: %s", h)
}
