package sandbox

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/scheduler"
)

// EnvbuildResolver finds environments the environment builder made: the
// venv of the spec's requirements, its base interpreter's prefix and the
// runner's own packages beside it. The server builds (and holds) the
// environment before a worker starts, so resolving only looks it up.
type EnvbuildResolver struct {
	Builder *envbuild.Builder
}

// Resolve returns the environment's paths on this host.
func (r EnvbuildResolver) Resolve(ctx context.Context, spec scheduler.Environment) (HostEnvironment, error) {
	env, err := r.Builder.Ensure(ctx, envbuild.Spec{Python: spec.Python, Requirements: spec.Requirements}, nil)
	if err != nil {
		return HostEnvironment{}, err
	}
	if spec.Key != "" && env.Key != spec.Key {
		return HostEnvironment{}, fmt.Errorf("%w: environment %s resolved to %s", ErrInvalidSpec, spec.Key, env.Key)
	}
	runtimeDir, err := r.Builder.Runtime(ctx, spec.Python, nil)
	if err != nil {
		return HostEnvironment{}, fmt.Errorf("the worker runtime: %w", err)
	}
	return HostEnvironment{
		Python:        env.Python,
		RuntimeDir:    runtimeDir,
		ReadOnlyPaths: []string{env.Dir, env.BasePrefix, runtimeDir},
		Env: []string{
			"VIRTUAL_ENV=" + env.Dir,
			"PATH=" + filepath.Join(env.Dir, "bin") + ":" + defaultPath,
		},
	}, nil
}
