package machine

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Host is what this machine can give workers in total.
type Host struct {
	// CPUs is the number of cores workers' CPU quotas may add up to.
	CPUs float64
	// MemoryBytes is the memory workers' limits may add up to.
	MemoryBytes int64
	// GPUs is the inventory, sorted by index.
	GPUs []GPU
}

// GPU is one device of the inventory.
type GPU struct {
	// Index is the device's index as nvidia-smi numbers it (PCI bus order).
	Index int `yaml:"index"`
	// Model is the marketing name, such as "Tesla T4" or "A100".
	Model string `yaml:"model"`
}

// String describes the host for people: "2 CPU, 23.5 GiB, 1×Tesla T4 GPU".
func (h Host) String() string {
	s := fmt.Sprintf("%g CPU, %s", roundCPU(h.CPUs), FormatBytes(h.MemoryBytes))
	if len(h.GPUs) == 0 {
		return s + ", no GPU"
	}
	counts := map[string]int{}
	var models []string
	for _, g := range h.GPUs {
		if counts[g.Model] == 0 {
			models = append(models, g.Model)
		}
		counts[g.Model]++
	}
	for _, m := range models {
		s += fmt.Sprintf(", %d×%s GPU", counts[m], m)
	}
	return s
}

func roundCPU(c float64) float64 {
	return float64(int64(c*100+0.5)) / 100
}

// DetectHost measures this machine: usable CPUs and memory (the smaller of
// the hardware and this process's cgroup limits, where the platform has
// them) and the GPUs nvidia-smi lists. When nvidia-smi is installed but
// fails, the returned Host is still valid for CPUs and memory and the error
// wraps ErrGPUDetection, so a caller may go on without GPUs.
func DetectHost(ctx context.Context) (Host, error) {
	h, err := detectCPUAndMemory()
	if err != nil {
		return Host{}, fmt.Errorf("detect host: %w", err)
	}
	gpus, err := detectGPUs(ctx)
	h.GPUs = gpus
	if err != nil {
		return h, err
	}
	return h, nil
}

// nvidiaSMITimeout bounds nvidia-smi, which can hang on a wedged driver.
const nvidiaSMITimeout = 15 * time.Second

func detectGPUs(ctx context.Context) ([]GPU, error) {
	path, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, nvidiaSMITimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "--query-gpu=index,name", "--format=csv,noheader")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%w: nvidia-smi: %w: %s", ErrGPUDetection, err, strings.TrimSpace(stderr.String()))
	}
	gpus, err := parseNvidiaSMI(out)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGPUDetection, err)
	}
	return gpus, nil
}

// parseNvidiaSMI reads "index, name" lines.
func parseNvidiaSMI(out []byte) ([]GPU, error) {
	var gpus []GPU
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		idx, name, ok := strings.Cut(line, ",")
		if !ok {
			return nil, fmt.Errorf("nvidia-smi: unexpected line %q", line)
		}
		i, err := strconv.Atoi(strings.TrimSpace(idx))
		if err != nil {
			return nil, fmt.Errorf("nvidia-smi: unexpected index in %q", line)
		}
		gpus = append(gpus, GPU{Index: i, Model: strings.TrimSpace(name)})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.Slice(gpus, func(a, b int) bool { return gpus[a].Index < gpus[b].Index })
	return gpus, nil
}

// GPUModelMatches reports whether a device named name (as nvidia-smi or the
// configuration calls it) is of model (as a machine type asks for it). The
// model's words must appear as whole words of the name, ignoring case, so
// "T4" matches "Tesla T4" and "A100" matches "NVIDIA A100-SXM4-40GB", but
// "L4" does not match "NVIDIA L40S". An empty model matches any device.
func GPUModelMatches(model, name string) bool {
	want := gpuWords(model)
	if len(want) == 0 {
		return true
	}
	have := gpuWords(name)
	for i := 0; i+len(want) <= len(have); i++ {
		match := true
		for j, w := range want {
			if have[i+j] != w {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

func gpuWords(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
}
