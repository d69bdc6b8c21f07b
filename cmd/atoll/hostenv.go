package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/server"
)

// hostEnvironments runs every worker on one host interpreter.
type hostEnvironments struct {
	python  string
	version string
}

func newHostEnvironments(ctx context.Context, python string) (*hostEnvironments, error) {
	path, err := exec.LookPath(python)
	if err != nil {
		return nil, fmt.Errorf("--python %s: %w", python, err)
	}
	out, err := exec.CommandContext(ctx, path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])").Output()
	if err != nil {
		return nil, fmt.Errorf("--python %s: %w", python, err)
	}
	return &hostEnvironments{python: path, version: strings.TrimSpace(string(out))}, nil
}

func (h *hostEnvironments) Resolve(_ context.Context, spec *atollv1.Environment, _ func(string)) (server.Environment, error) {
	if spec.GetPythonVersion() != h.version {
		return server.Environment{}, fmt.Errorf("%w: the caller runs Python %s; this server has Python %s", server.ErrPythonUnavailable, spec.GetPythonVersion(), h.version)
	}
	return server.Environment{Key: "host-" + h.version, Python: h.python}, nil
}
