package machine

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var laptop = Host{CPUs: 2, MemoryBytes: 24684092 * 1024}

func mustType(t *testing.T, name string) Type {
	t.Helper()
	typ, err := Defaults().Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return typ
}

func TestCheckFits(t *testing.T) {
	gpuHost := Host{CPUs: 16, MemoryBytes: 128 * GiB, GPUs: []GPU{{0, "Tesla T4"}, {1, "Tesla T4"}}}
	tests := []struct {
		name    string
		host    Host
		typ     string
		wantErr string // empty: fits
	}{
		{name: "XS on a laptop", host: laptop, typ: "XS"},
		{name: "M takes the whole laptop", host: laptop, typ: "M"},
		{name: "L needs more CPU", host: laptop, typ: "L", wantErr: "machine type L needs 4 CPU, 32 GiB; this host has 2 CPU, 23.5 GiB, no GPU"},
		{name: "XL", host: laptop, typ: "XL", wantErr: "machine type XL needs 8 CPU, 128 GiB; this host has 2 CPU, 23.5 GiB, no GPU"},
		{name: "GPU type without GPUs", host: Host{CPUs: 16, MemoryBytes: 128 * GiB}, typ: "GPU-T4", wantErr: "needs 4 CPU, 26 GiB, 1×T4 GPU; this host has 16 CPU, 128 GiB, no GPU"},
		{name: "GPU type with matching model", host: gpuHost, typ: "GPU-T4"},
		{name: "GPU type with another model", host: gpuHost, typ: "GPU", wantErr: "needs 8 CPU, 64 GiB, 1×A100 GPU; this host has 16 CPU, 128 GiB, 2×Tesla T4 GPU"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := NewCapacity(tt.host).CheckFits(mustType(t, tt.typ))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckFits: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrNeverFits) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckFits = %v, want ErrNeverFits with %q", err, tt.wantErr)
			}
		})
	}
}

func TestAcquireNeverFitsFailsAtOnce(t *testing.T) {
	c := NewCapacity(laptop)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err := c.Acquire(ctx, mustType(t, "XL"))
	if !errors.Is(err, ErrNeverFits) {
		t.Fatalf("Acquire(XL) = %v, want ErrNeverFits", err)
	}
	if time.Since(start) > time.Second {
		t.Fatalf("Acquire(XL) waited %s", time.Since(start))
	}
}

func TestAcquireReservesCPUAsWellAsMemory(t *testing.T) {
	c := NewCapacity(laptop)
	xs := mustType(t, "XS")
	var grants []*Grant
	for i := range 8 {
		g, err := c.TryAcquire(xs)
		if err != nil {
			t.Fatalf("XS #%d: %v", i+1, err)
		}
		grants = append(grants, g)
	}
	if _, err := c.TryAcquire(xs); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("ninth XS on 2 CPUs = %v, want ErrNoCapacity", err)
	}
	if got := c.Used(); got.CPUs != 2 || got.MemoryBytes != 8*256*MiB {
		t.Errorf("Used = %+v, want 2 CPU and 2 GiB", got)
	}
	for _, g := range grants {
		g.Release()
		g.Release() // idempotent
	}
	if diff := cmp.Diff(Resources{CPUs: 2, MemoryBytes: laptop.MemoryBytes}, c.Free()); diff != "" {
		t.Errorf("Free after release (-want +got):\n%s", diff)
	}
}

func TestAcquireMemoryIsNotOvercommitted(t *testing.T) {
	c := NewCapacity(Host{CPUs: 64, MemoryBytes: 20 * GiB})
	m := mustType(t, "M") // 8 GiB
	g1, err := c.TryAcquire(m)
	if err != nil {
		t.Fatal(err)
	}
	defer g1.Release()
	g2, err := c.TryAcquire(m)
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Release()
	if _, err := c.TryAcquire(m); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("third M in 20 GiB = %v, want ErrNoCapacity", err)
	}
}

func TestAcquireTimeoutGivesNoCapacity(t *testing.T) {
	c := NewCapacity(laptop)
	g, err := c.Acquire(context.Background(), mustType(t, "M"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.Acquire(ctx, mustType(t, "XS"))
	if !errors.Is(err, ErrNoCapacity) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire on a full host = %v, want ErrNoCapacity and DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "machine type XS") {
		t.Errorf("error %q does not name the type", err)
	}
	if n := c.Waiting(); n != 0 {
		t.Errorf("Waiting = %d after the waiter gave up", n)
	}
}

// acquireAsync starts an Acquire and returns a channel with its grant.
func acquireAsync(t *testing.T, ctx context.Context, c *Capacity, typ Type) <-chan *Grant {
	t.Helper()
	ch := make(chan *Grant, 1)
	before := c.Waiting()
	go func() {
		g, err := c.Acquire(ctx, typ)
		if err != nil {
			t.Errorf("Acquire(%s): %v", typ.Name, err)
		}
		ch <- g
	}()
	// Wait until it is in line, so the order of the calls is the order of
	// the queue.
	deadline := time.Now().Add(5 * time.Second)
	for c.Waiting() == before {
		if time.Now().After(deadline) {
			t.Fatalf("Acquire(%s) never queued", typ.Name)
		}
		time.Sleep(time.Millisecond)
	}
	return ch
}

func TestAcquireIsFirstComeFirstServed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := NewCapacity(laptop)
	s := mustType(t, "S") // 0.5 CPU
	m := mustType(t, "M") // 2 CPU
	held := make([]*Grant, 4)
	for i := range held {
		g, err := c.TryAcquire(s)
		if err != nil {
			t.Fatal(err)
		}
		held[i] = g
	}
	// An M queues first, then an S: the S must not overtake the M even
	// when room for an S frees up.
	mCh := acquireAsync(t, ctx, c, m)
	sCh := acquireAsync(t, ctx, c, s)
	held[0].Release()
	select {
	case <-sCh:
		t.Fatal("S overtook the waiting M")
	case <-time.After(20 * time.Millisecond):
	}
	for _, g := range held[1:] {
		g.Release()
	}
	gm := <-mCh
	select {
	case <-sCh:
		t.Fatal("S admitted while M holds all CPUs")
	case <-time.After(20 * time.Millisecond):
	}
	gm.Release()
	gs := <-sCh
	gs.Release()
	if got := c.Used(); got.CPUs != 0 || got.MemoryBytes != 0 {
		t.Errorf("Used after all released = %+v", got)
	}
}

func TestCancelledHeadLetsOthersIn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := NewCapacity(laptop)
	g, err := c.TryAcquire(mustType(t, "S"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Release()
	mCtx, mCancel := context.WithCancel(ctx)
	mDone := make(chan error, 1)
	go func() {
		_, err := c.Acquire(mCtx, mustType(t, "M"))
		mDone <- err
	}()
	for c.Waiting() == 0 {
		time.Sleep(time.Millisecond)
	}
	sCh := acquireAsync(t, ctx, c, mustType(t, "S"))
	mCancel()
	if err := <-mDone; !errors.Is(err, ErrNoCapacity) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Acquire = %v", err)
	}
	(<-sCh).Release()
}

func TestGPUAssignmentIsExclusive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := ParseConfig([]byte(`
machine_types:
  - {name: GPU-T4x2, cpus: 2, memory: 8GiB, gpus: 2, gpu_model: T4}
gpus:
  - {index: 0, model: Tesla T4}
  - {index: 1, model: NVIDIA A100-SXM4-40GB}
  - {index: 2, model: Tesla T4}
  - {index: 3, model: Tesla T4}
`))
	if err != nil {
		t.Fatal(err)
	}
	cat := cfg.Catalog()
	c := NewCapacity(cfg.Host(Host{CPUs: 32, MemoryBytes: 256 * GiB}))
	lookup := func(name string) Type {
		typ, err := cat.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		return typ
	}

	t4a, err := c.Acquire(ctx, lookup("GPU-T4"))
	if err != nil {
		t.Fatal(err)
	}
	a100, err := c.Acquire(ctx, lookup("GPU"))
	if err != nil {
		t.Fatal(err)
	}
	t4b, err := c.Acquire(ctx, lookup("GPU-T4"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([][]int{{0}, {1}, {2}}, [][]int{t4a.GPUs(), a100.GPUs(), t4b.GPUs()}); diff != "" {
		t.Errorf("assigned GPUs (-want +got):\n%s", diff)
	}
	// One T4 is left: a two-T4 type waits until another is released.
	if _, err := c.TryAcquire(lookup("GPU-T4x2")); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("GPU-T4x2 with one free T4 = %v, want ErrNoCapacity", err)
	}
	if _, err := c.TryAcquire(lookup("GPU")); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("second A100 type = %v, want ErrNoCapacity", err)
	}
	if got := c.Free().GPUs; len(got) != 1 || got[0].Index != 3 {
		t.Errorf("free GPUs = %v, want [3]", got)
	}
	ch := acquireAsync(t, ctx, c, lookup("GPU-T4x2"))
	t4a.Release()
	pair := <-ch
	if diff := cmp.Diff([]int{0, 3}, pair.GPUs()); diff != "" {
		t.Errorf("GPU-T4x2 GPUs (-want +got):\n%s", diff)
	}
	for _, g := range []*Grant{pair, a100, t4b} {
		g.Release()
	}
	if got := len(c.Free().GPUs); got != 4 {
		t.Errorf("free GPUs after release = %d, want 4", got)
	}
}
