package server

import (
	"context"
	"fmt"
	"strings"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/envbuild"
)

// BuiltEnvironments builds environments with the environment builder: a
// venv per requirement set, plus the runner's own packages beside it.
type BuiltEnvironments struct {
	Builder *envbuild.Builder
	// AllowLocalPaths lets requirements name paths on the server
	// ("pkg @ file:///srv/pkg"); off, since any account could then copy
	// the server's files into its environment.
	AllowLocalPaths bool
}

func builderSpec(spec *atollv1.Environment) envbuild.Spec {
	return envbuild.Spec{Python: spec.GetPythonVersion(), Requirements: spec.GetRequirements()}
}

// localPath reports whether a requirement names a path on this host
// rather than a package on an index or a remote URL.
func localPath(req string) bool {
	target := strings.TrimSpace(req)
	if _, ref, ok := strings.Cut(target, "@"); ok {
		target = strings.TrimSpace(ref)
	}
	lower := strings.ToLower(target)
	return strings.HasPrefix(lower, "file:") || strings.HasPrefix(target, "/") ||
		strings.HasPrefix(target, ".") || strings.HasPrefix(target, "~")
}

// Key names the environment without building it.
func (e BuiltEnvironments) Key(spec *atollv1.Environment) (string, error) {
	if !e.AllowLocalPaths {
		for _, r := range spec.GetRequirements() {
			if localPath(r) {
				return "", fmt.Errorf("%w: requirement %q names a path on the server; only packages from the index "+
					"or remote URLs can be installed (the server's operator can allow paths with --allow-local-requirements)",
					envbuild.ErrInvalidSpec, r)
			}
		}
	}
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
