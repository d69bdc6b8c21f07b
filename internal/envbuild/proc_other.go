//go:build !linux

package envbuild

import "os/exec"

// configureProcess keeps exec's default: cancelling kills uv itself.
func configureProcess(cmd *exec.Cmd) {}
