package envbuild_test

import (
	"context"
	"fmt"
	"log"
	"os/exec"

	"github.com/atoll-dev/atoll/internal/envbuild"
)

// A server builds (or reuses) the environment for a call, holds it while a
// worker runs in it, and puts the runner's packages on the path beside it.
func ExampleBuilder_EnsureAcquire() {
	b, err := envbuild.New(envbuild.Options{
		Root:        "/var/lib/atoll/envs",
		RuntimeLock: []byte("cloudpickle==3.1.3 --hash=sha256:cbe9fde14429a5db009ea05ce94e5182cf998c97b96918d50c10f73f9c2f4f33\n"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	ctx := context.Background()
	spec := envbuild.Spec{Python: "3.11", Requirements: []string{"pyjokes"}}
	env, release, err := b.EnsureAcquire(ctx, spec, func(line string) { fmt.Println("build:", line) })
	if err != nil {
		log.Fatal(err) // errors.Is(err, envbuild.ErrBuildFailed) carries uv's text
	}
	defer release()
	runtime, err := b.Runtime(ctx, spec.Python, nil)
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(env.Python, "-c", "import pyjokes, cloudpickle; print(pyjokes.get_joke())")
	cmd.Env = []string{"PYTHONPATH=" + runtime}
	out, _ := cmd.Output()
	fmt.Print(string(out))
}
