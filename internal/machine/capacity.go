package machine

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
)

// Capacity admits workers onto the host: a worker of a type runs only when
// the type's CPUs, memory and GPUs are free, and holds them (through its
// Grant) until it is torn down.
//
// Nothing is over-committed. Memory and GPUs cannot be: an over-committed
// memory limit is an OOM kill waiting to happen, and a GPU is exclusive. CPU
// could be, since a quota is a ceiling rather than a reservation, but then
// a type's CPU figure would stop meaning what it says (an XS worker measured
// at 0.25 CPU would get less under load), so CPU quotas are reserved as
// well. On a 2-core laptop that admits eight XS workers at once, or one M.
// Whoever prefers more concurrency on small types declares a larger
// capacity.cpus in the configuration; that is the over-commit knob.
//
// Waiting is first come, first served: a waiting large type holds back
// smaller ones that arrive after it, so it cannot be starved by them.
type Capacity struct {
	host     Host
	cpuMilli int64 // host CPUs in thousandths, to add up quotas exactly

	mu       sync.Mutex
	usedCPU  int64
	usedMem  int64
	gpuInUse map[int]bool
	queue    []*waiter
}

type waiter struct {
	t     Type
	ready chan struct{} // closed once grant is set
	grant *Grant
}

// Resources is an amount of the host's resources, for status reports.
type Resources struct {
	CPUs        float64
	MemoryBytes int64
	GPUs        []GPU
}

// NewCapacity starts with all of h free.
func NewCapacity(h Host) *Capacity {
	h.GPUs = slices.Clone(h.GPUs)
	slices.SortFunc(h.GPUs, func(a, b GPU) int { return a.Index - b.Index })
	return &Capacity{host: h, cpuMilli: milli(h.CPUs), gpuInUse: map[int]bool{}}
}

func milli(cpus float64) int64 { return int64(math.Round(cpus * 1000)) }

// Host returns the capacity's host.
func (c *Capacity) Host() Host {
	h := c.host
	h.GPUs = slices.Clone(h.GPUs)
	return h
}

// needs describes what a type asks of a host, in the words of Host.String.
func needs(t Type) string {
	s := fmt.Sprintf("%g CPU, %s", t.CPUs, FormatBytes(t.MemoryBytes))
	if t.GPUs > 0 {
		s += fmt.Sprintf(", %d×%s GPU", t.GPUs, orAny(t.GPUModel))
	}
	return s
}

// CheckFits returns an error wrapping ErrNeverFits when t needs more than
// the whole host has, naming both: "machine type XL needs 8 CPU, 128 GiB;
// this host has 2 CPU, 23.5 GiB, no GPU".
func (c *Capacity) CheckFits(t Type) error {
	fits := milli(t.CPUs) <= c.cpuMilli && t.MemoryBytes <= c.host.MemoryBytes
	if t.GPUs > 0 {
		n := 0
		for _, g := range c.host.GPUs {
			if GPUModelMatches(t.GPUModel, g.Model) {
				n++
			}
		}
		fits = fits && n >= t.GPUs
	}
	if !fits {
		return fmt.Errorf("%w: machine type %s needs %s; this host has %s", ErrNeverFits, t.Name, needs(t), c.host)
	}
	return nil
}

// Acquire reserves t's resources, waiting in line until they are free. It
// fails at once, wrapping ErrNeverFits, for a type the host can never fit,
// and wraps both ErrNoCapacity and ctx's error when ctx ends first.
func (c *Capacity) Acquire(ctx context.Context, t Type) (*Grant, error) {
	if err := c.CheckFits(t); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.queue) == 0 {
		if g := c.takeLocked(t); g != nil {
			c.mu.Unlock()
			return g, nil
		}
	}
	w := &waiter{t: t, ready: make(chan struct{})}
	c.queue = append(c.queue, w)
	c.mu.Unlock()

	select {
	case <-w.ready:
		return w.grant, nil
	case <-ctx.Done():
	}
	c.mu.Lock()
	select {
	case <-w.ready:
		// Granted while ctx ended: the caller is gone, so give it back.
		c.releaseLocked(w.grant)
	default:
		c.queue = slices.DeleteFunc(c.queue, func(q *waiter) bool { return q == w })
		// Leaving the head of the line may let those behind go.
		c.grantWaitersLocked()
	}
	free := c.freeLocked()
	c.mu.Unlock()
	return nil, fmt.Errorf("%w for machine type %s (needs %s; free: %s): %w", ErrNoCapacity, t.Name, needs(t), free, ctx.Err())
}

// TryAcquire reserves t's resources if they are free now and nobody is
// waiting; otherwise it returns an error wrapping ErrNoCapacity (or
// ErrNeverFits) without waiting. A caller can use it to tell whether a call
// is about to queue.
func (c *Capacity) TryAcquire(t Type) (*Grant, error) {
	if err := c.CheckFits(t); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		if g := c.takeLocked(t); g != nil {
			return g, nil
		}
	}
	return nil, fmt.Errorf("%w for machine type %s (needs %s; free: %s)", ErrNoCapacity, t.Name, needs(t), c.freeLocked())
}

// takeLocked reserves t if it fits what is free, or returns nil.
func (c *Capacity) takeLocked(t Type) *Grant {
	cpu := milli(t.CPUs)
	if c.usedCPU+cpu > c.cpuMilli || c.usedMem+t.MemoryBytes > c.host.MemoryBytes {
		return nil
	}
	var gpus []int
	for _, g := range c.host.GPUs {
		if len(gpus) == t.GPUs {
			break
		}
		if !c.gpuInUse[g.Index] && GPUModelMatches(t.GPUModel, g.Model) {
			gpus = append(gpus, g.Index)
		}
	}
	if len(gpus) < t.GPUs {
		return nil
	}
	c.usedCPU += cpu
	c.usedMem += t.MemoryBytes
	for _, i := range gpus {
		c.gpuInUse[i] = true
	}
	return &Grant{c: c, t: t, cpu: cpu, gpus: gpus}
}

// grantWaitersLocked serves the line in order until its head does not fit.
func (c *Capacity) grantWaitersLocked() {
	for len(c.queue) > 0 {
		w := c.queue[0]
		g := c.takeLocked(w.t)
		if g == nil {
			return
		}
		w.grant = g
		close(w.ready)
		c.queue = c.queue[1:]
	}
}

func (c *Capacity) releaseLocked(g *Grant) {
	if g.released {
		return
	}
	g.released = true
	c.usedCPU -= g.cpu
	c.usedMem -= g.t.MemoryBytes
	for _, i := range g.gpus {
		delete(c.gpuInUse, i)
	}
	c.grantWaitersLocked()
}

// Free returns what is not reserved now.
func (c *Capacity) Free() Resources {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.freeLocked()
}

func (c *Capacity) freeLocked() Resources {
	r := Resources{
		CPUs:        float64(c.cpuMilli-c.usedCPU) / 1000,
		MemoryBytes: c.host.MemoryBytes - c.usedMem,
	}
	for _, g := range c.host.GPUs {
		if !c.gpuInUse[g.Index] {
			r.GPUs = append(r.GPUs, g)
		}
	}
	return r
}

// Used returns what granted workers hold now.
func (c *Capacity) Used() Resources {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := Resources{CPUs: float64(c.usedCPU) / 1000, MemoryBytes: c.usedMem}
	for _, g := range c.host.GPUs {
		if c.gpuInUse[g.Index] {
			r.GPUs = append(r.GPUs, g)
		}
	}
	return r
}

// Waiting returns how many Acquire calls are in line.
func (c *Capacity) Waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// String describes the resources for people: "1.5 CPU, 3 GiB, no GPU".
func (r Resources) String() string {
	return Host(r).String()
}

// Grant is one worker's reservation.
type Grant struct {
	c        *Capacity
	t        Type
	cpu      int64
	gpus     []int
	released bool // guarded by c.mu
}

// Type returns the machine type the grant was made for.
func (g *Grant) Type() Type { return g.t }

// GPUs returns the indexes of the GPUs reserved for the worker, ascending.
func (g *Grant) GPUs() []int { return slices.Clone(g.gpus) }

// Release gives the resources back and lets waiting workers in. Calling it
// again does nothing.
func (g *Grant) Release() {
	g.c.mu.Lock()
	defer g.c.mu.Unlock()
	g.c.releaseLocked(g)
}
