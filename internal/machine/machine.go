// Package machine owns the catalog of machine types (the CPU, memory, pids
// and GPU limits a worker gets) and the host's capacity. It only describes
// resources: it reads the server's own cgroup limits (through package
// sandbox/cgroups, the one place that parses cgroups) to size the host,
// but never starts processes, writes cgroups or applies a limit.
package machine

import (
	"fmt"
	"sort"
	"strings"
)

// GiB and MiB are byte multipliers for memory sizes.
const (
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
)

// Type is one machine type: the resources a worker of that type may use.
type Type struct {
	Name string
	// CPUs is the CPU quota in cores (0.25 means a quarter of one core).
	CPUs float64
	// MemoryBytes is the memory limit. Memory plus swap is limited to the
	// same amount (the OCI and Docker convention "swap equal to memory"), so
	// a worker never swaps: a limit that swap could stretch would make
	// out-of-memory failures depend on the host's swap.
	MemoryBytes int64
	// Pids is the maximum number of processes and threads in the worker.
	Pids int64
	// GPUs is the number of whole GPUs the worker gets exclusively.
	GPUs int
	// GPUModel, when set, restricts the type to GPUs of that model ("T4").
	GPUModel string
}

// String describes the type for people: "M (2 CPU, 8 GiB)".
func (t Type) String() string {
	s := fmt.Sprintf("%s (%g CPU, %s", t.Name, t.CPUs, FormatBytes(t.MemoryBytes))
	if t.GPUs > 0 {
		s += fmt.Sprintf(", %d×%s GPU", t.GPUs, orAny(t.GPUModel))
	}
	return s + ")"
}

func orAny(model string) string {
	if model == "" {
		return "any"
	}
	return model
}

// FormatBytes renders a byte count in the largest whole binary unit.
func FormatBytes(n int64) string {
	switch {
	case n >= GiB && n%GiB == 0:
		return fmt.Sprintf("%d GiB", n/GiB)
	case n >= GiB:
		return fmt.Sprintf("%.1f GiB", float64(n)/float64(GiB))
	default:
		return fmt.Sprintf("%d MiB", n/MiB)
	}
}

// DefaultPids is the process limit for types that do not set one.
const DefaultPids = 1024

// Defaults returns the catalog from the specification.
func Defaults() Catalog {
	return NewCatalog(
		Type{Name: "XS", CPUs: 0.25, MemoryBytes: 256 * MiB, Pids: DefaultPids},
		Type{Name: "S", CPUs: 0.5, MemoryBytes: 1 * GiB, Pids: DefaultPids},
		Type{Name: "M", CPUs: 2, MemoryBytes: 8 * GiB, Pids: DefaultPids},
		Type{Name: "L", CPUs: 4, MemoryBytes: 32 * GiB, Pids: DefaultPids},
		Type{Name: "XL", CPUs: 8, MemoryBytes: 128 * GiB, Pids: DefaultPids},
		Type{Name: "GPU-T4", CPUs: 4, MemoryBytes: 26 * GiB, Pids: DefaultPids, GPUs: 1, GPUModel: "T4"},
		Type{Name: "GPU", CPUs: 8, MemoryBytes: 64 * GiB, Pids: DefaultPids, GPUs: 1, GPUModel: "A100"},
	)
}

// Catalog is an immutable set of machine types by name.
type Catalog struct {
	types map[string]Type
}

// NewCatalog builds a catalog; a later type replaces an earlier one of the
// same name.
func NewCatalog(types ...Type) Catalog {
	c := Catalog{types: make(map[string]Type, len(types))}
	for _, t := range types {
		c.types[t.Name] = t
	}
	return c
}

// Lookup returns the named type, or an error wrapping ErrUnknownType that
// lists the known names.
func (c Catalog) Lookup(name string) (Type, error) {
	if t, ok := c.types[name]; ok {
		return t, nil
	}
	return Type{}, fmt.Errorf("%w %q: choose one of %s", ErrUnknownType, name, strings.Join(c.Names(), ", "))
}

// Names lists the type names, sorted.
func (c Catalog) Names() []string {
	names := make([]string, 0, len(c.types))
	for n := range c.types {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Types lists the types, sorted by name.
func (c Catalog) Types() []Type {
	out := make([]Type, 0, len(c.types))
	for _, n := range c.Names() {
		out = append(out, c.types[n])
	}
	return out
}
