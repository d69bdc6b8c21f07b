//go:build unix && !linux

package sandbox

// becomeRunner: the user split is Linux's alone (OCI runtimes).
func becomeRunner([]string) error { return nil }

// ownCPUCgroup: no cgroups here.
func ownCPUCgroup() (string, bool) { return "", false }
