package machine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/dustin/go-humanize"
	"gopkg.in/yaml.v3"
)

// Config is the machine part of the server's configuration file:
//
//	machine_types:            # add types or redefine defaults field by field
//	  - name: XS
//	    memory: 512MiB
//	  - name: GPU-L4
//	    cpus: 4
//	    memory: 16GiB
//	    gpus: 1
//	    gpu_model: L4
//	gpus:                     # declared GPU inventory; replaces nvidia-smi's
//	  - {index: 0, model: T4}
//	capacity:                 # what workers may use; replaces detection
//	  cpus: 8                 # more than the cores: CPU quotas over-committed
//	  memory: 20GiB
//	accounts:                 # caps on each account's concurrent workers
//	  max_workers: 4          # every account (0 or absent: no cap)
//	  overrides:              # some accounts differently
//	    batch: {max_workers: 1}
//	    team-a: {max_workers: 0}   # no cap
//
// Keys outside these belong to other parts of the server's configuration and
// are ignored, so the server can keep one file.
type Config struct {
	MachineTypes []TypeConfig   `yaml:"machine_types"`
	GPUs         []GPU          `yaml:"gpus"`
	Capacity     CapacityConfig `yaml:"capacity"`
	Accounts     AccountsConfig `yaml:"accounts"`
}

// AccountsConfig caps how many workers (busy or warm) each account runs at
// once, so that one account cannot hold all of the host. A call of an
// account at its cap waits for one of its workers, in the same line and
// under the same queue timeout as a call waiting for capacity.
type AccountsConfig struct {
	// MaxWorkers caps every account not in Overrides; 0 means no cap.
	MaxWorkers int                      `yaml:"max_workers"`
	Overrides  map[string]AccountConfig `yaml:"overrides"`

	Unknown map[string]any `yaml:",inline"`
}

// AccountConfig is one account's cap.
type AccountConfig struct {
	MaxWorkers int `yaml:"max_workers"`

	Unknown map[string]any `yaml:",inline"`
}

// MaxWorkers returns account's cap of concurrent workers; 0 means none.
func (c Config) MaxWorkers(account string) int {
	if o, ok := c.Accounts.Overrides[account]; ok {
		return o.MaxWorkers
	}
	return c.Accounts.MaxWorkers
}

// TypeConfig adds a machine type or, when Name is a known type, redefines
// the fields it sets and keeps the others.
type TypeConfig struct {
	Name     string   `yaml:"name"`
	CPUs     *float64 `yaml:"cpus"`
	Memory   ByteSize `yaml:"memory"`
	Pids     *int64   `yaml:"pids"`
	GPUs     *int     `yaml:"gpus"`
	GPUModel *string  `yaml:"gpu_model"`

	// Unknown collects misspelled keys so parsing can reject them.
	Unknown map[string]any `yaml:",inline"`
}

// CapacityConfig overrides the detected host capacity. Zero fields keep the
// detected value.
type CapacityConfig struct {
	CPUs   float64  `yaml:"cpus"`
	Memory ByteSize `yaml:"memory"`

	Unknown map[string]any `yaml:",inline"`
}

// ByteSize is a memory size written for people: "8GiB", "512MiB", "1.5 GiB",
// or a plain byte count. GiB/MiB are binary; GB/MB are decimal.
type ByteSize int64

// ParseByteSize parses a size such as "8GiB".
func ParseByteSize(s string) (ByteSize, error) {
	n, err := humanize.ParseBytes(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("parse size %q: want a number with a unit such as 512MiB or 8GiB", s)
	}
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("parse size %q: too large", s)
	}
	return ByteSize(n), nil
}

// UnmarshalYAML accepts a size string or a plain integer.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: memory size must be a scalar such as 8GiB", n.Line)
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// MarshalYAML writes the size in binary units.
func (b ByteSize) MarshalYAML() (any, error) {
	return strings.ReplaceAll(FormatBytes(int64(b)), " ", ""), nil
}

// String renders the size like FormatBytes.
func (b ByteSize) String() string { return FormatBytes(int64(b)) }

// LoadConfig reads and validates the configuration file at path.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("load machine config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes and validates a configuration document. An empty
// document is the default configuration.
func ParseConfig(data []byte) (Config, error) {
	var cfg Config
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

var typeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// minMemory is the least memory a worker can start with (the runtime and
// the agent alone need a few MiB).
const minMemory = 16 * MiB

// Validate reports every problem in the configuration at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	defaults := Defaults()
	seen := map[string]bool{}
	for i, tc := range c.MachineTypes {
		where := fmt.Sprintf("machine_types[%d]", i)
		if tc.Name != "" {
			where = fmt.Sprintf("machine type %s", tc.Name)
		}
		if len(tc.Unknown) > 0 {
			bad("%s: unknown field(s) %s (known: name, cpus, memory, pids, gpus, gpu_model)", where, keys(tc.Unknown))
		}
		if !typeNameRE.MatchString(tc.Name) {
			bad("%s: name %q must be letters, digits, '-', '_' or '.'", where, tc.Name)
			continue
		}
		if seen[tc.Name] {
			bad("%s: defined twice", where)
		}
		seen[tc.Name] = true
		t := tc.apply(defaults)
		_, known := defaults.types[tc.Name]
		if !known && tc.CPUs == nil {
			bad("%s: new type needs cpus", where)
		}
		if !known && tc.Memory == 0 {
			bad("%s: new type needs memory", where)
		}
		if tc.CPUs != nil && !(*tc.CPUs > 0 && *tc.CPUs <= 1024) {
			bad("%s: cpus must be more than 0 (got %g)", where, *tc.CPUs)
		}
		if tc.Memory != 0 && int64(tc.Memory) < minMemory {
			bad("%s: memory must be at least %s (got %s)", where, FormatBytes(minMemory), tc.Memory)
		}
		if tc.Pids != nil && *tc.Pids < 0 {
			bad("%s: pids must not be negative", where)
		}
		if tc.GPUs != nil && *tc.GPUs < 0 {
			bad("%s: gpus must not be negative", where)
		}
		if t.GPUModel != "" && t.GPUs == 0 {
			bad("%s: gpu_model %q set but gpus is 0", where, t.GPUModel)
		}
	}
	indexes := map[int]bool{}
	for i, g := range c.GPUs {
		if g.Index < 0 {
			bad("gpus[%d]: index must not be negative", i)
		}
		if indexes[g.Index] {
			bad("gpus[%d]: index %d declared twice", i, g.Index)
		}
		indexes[g.Index] = true
		if strings.TrimSpace(g.Model) == "" {
			bad("gpus[%d]: model is required", i)
		}
	}
	if len(c.Capacity.Unknown) > 0 {
		bad("capacity: unknown field(s) %s (known: cpus, memory)", keys(c.Capacity.Unknown))
	}
	if c.Capacity.CPUs < 0 {
		bad("capacity: cpus must not be negative")
	}
	if c.Capacity.Memory < 0 {
		bad("capacity: memory must not be negative")
	}
	if len(c.Accounts.Unknown) > 0 {
		bad("accounts: unknown field(s) %s (known: max_workers, overrides)", keys(c.Accounts.Unknown))
	}
	if c.Accounts.MaxWorkers < 0 {
		bad("accounts: max_workers must not be negative")
	}
	for _, name := range sortedKeys(c.Accounts.Overrides) {
		o := c.Accounts.Overrides[name]
		if len(o.Unknown) > 0 {
			bad("accounts: overrides: %s: unknown field(s) %s (known: max_workers)", name, keys(o.Unknown))
		}
		if o.MaxWorkers < 0 {
			bad("accounts: overrides: %s: max_workers must not be negative", name)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, errors.Join(errs...))
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func keys(m map[string]any) string {
	return strings.Join(sortedKeys(m), ", ")
}

// apply returns the type tc describes, starting from the catalog's type of
// the same name when there is one.
func (tc TypeConfig) apply(base Catalog) Type {
	t, ok := base.types[tc.Name]
	if !ok {
		t = Type{Name: tc.Name, Pids: DefaultPids}
	}
	if tc.CPUs != nil {
		t.CPUs = *tc.CPUs
	}
	if tc.Memory != 0 {
		t.MemoryBytes = int64(tc.Memory)
	}
	if tc.Pids != nil {
		t.Pids = *tc.Pids
		if t.Pids == 0 {
			t.Pids = DefaultPids
		}
	}
	if tc.GPUs != nil {
		t.GPUs = *tc.GPUs
		if t.GPUs == 0 {
			t.GPUModel = ""
		}
	}
	if tc.GPUModel != nil {
		t.GPUModel = *tc.GPUModel
	}
	return t
}

// Catalog returns Defaults() with the configured types added or redefined.
// It assumes a validated configuration (LoadConfig and ParseConfig validate).
func (c Config) Catalog() Catalog {
	cat := Defaults()
	for _, tc := range c.MachineTypes {
		cat.types[tc.Name] = tc.apply(cat)
	}
	return cat
}

// Host returns the detected host with the configuration's overrides: a
// declared GPU inventory replaces the detected one, and capacity fields
// replace the detected CPUs and memory.
func (c Config) Host(detected Host) Host {
	h := detected
	if len(c.GPUs) > 0 {
		h.GPUs = append([]GPU(nil), c.GPUs...)
		sort.Slice(h.GPUs, func(i, j int) bool { return h.GPUs[i].Index < h.GPUs[j].Index })
	}
	if c.Capacity.CPUs > 0 {
		h.CPUs = c.Capacity.CPUs
	}
	if c.Capacity.Memory > 0 {
		h.MemoryBytes = int64(c.Capacity.Memory)
	}
	return h
}
