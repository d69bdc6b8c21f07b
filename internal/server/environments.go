package server

import (
	"context"
	"fmt"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/envbuild"
)

// BuiltEnvironments builds environments with the environment builder: a
// venv per requirement set, plus the runner's own packages beside it. The
// builder parses the requirements and refuses those naming this host's
// paths (envbuild.Options.AllowLocalRequirements).
type BuiltEnvironments struct {
	Builder *envbuild.Builder
}

func builderSpec(spec *atollv1.Environment) envbuild.Spec {
	return envbuild.Spec{Python: spec.GetPythonVersion(), Requirements: spec.GetRequirements()}
}

// Key names the environment without building it.
func (e BuiltEnvironments) Key(spec *atollv1.Environment) (string, error) {
	return e.Builder.Key(builderSpec(spec))
}

// Resolve builds (or reuses) the environment and holds it until Release.
func (e BuiltEnvironments) Resolve(ctx context.Context, spec *atollv1.Environment, logf func(string)) (Environment, error) {
	env, release, err := e.Builder.EnsureAcquire(ctx, builderSpec(spec), logf)
	if err != nil {
		return Environment{}, err
	}
	_, err = e.Builder.Runtime(ctx, spec.GetPythonVersion(), logf)
	if err != nil {
		release()
		return Environment{}, fmt.Errorf("%w: the worker runtime could not be installed: %w", envbuild.ErrBuildFailed, err)
	}
	return Environment{Key: env.Key, Release: release}, nil
}
