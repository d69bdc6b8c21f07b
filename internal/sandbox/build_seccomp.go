package sandbox

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// buildSeccompProfile is the seccomp filter of build containers, the one
// place it is chosen: the workers' default (DefaultSeccomp). A package's
// build code is as untrusted as a function, and needs nothing a function
// may not do.
func buildSeccompProfile() *specs.LinuxSeccomp {
	return DefaultSeccomp()
}
