package machine_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/atoll-dev/atoll/internal/machine"
)

func ExampleCapacity() {
	cfg, err := machine.ParseConfig([]byte(`
machine_types:
  - {name: XS, memory: 512MiB}
gpus:
  - {index: 0, model: Tesla T4}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	catalog := cfg.Catalog()
	host := cfg.Host(machine.Host{CPUs: 2, MemoryBytes: 24 * machine.GiB})
	capacity := machine.NewCapacity(host)

	xl, _ := catalog.Lookup("XL")
	fmt.Println(capacity.CheckFits(xl))

	t4, _ := catalog.Lookup("GPU-T4")
	fmt.Println(capacity.CheckFits(t4))

	m, _ := catalog.Lookup("M")
	g, _ := capacity.Acquire(context.Background(), m)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	xs, _ := catalog.Lookup("XS")
	_, err = capacity.Acquire(ctx, xs)
	fmt.Println(errors.Is(err, machine.ErrNoCapacity))
	g.Release()
	fmt.Println("free:", capacity.Free())
	// Output:
	// machine type can never fit this host: machine type XL needs 8 CPU, 128 GiB; this host has 2 CPU, 24 GiB, 1×Tesla T4 GPU
	// machine type can never fit this host: machine type GPU-T4 needs 4 CPU, 26 GiB, 1×T4 GPU; this host has 2 CPU, 24 GiB, 1×Tesla T4 GPU
	// true
	// free: 2 CPU, 24 GiB, 1×Tesla T4 GPU
}
