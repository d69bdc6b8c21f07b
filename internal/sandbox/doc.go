// Package sandbox starts workers on this host: each worker's agent runs
// either inside an OCI runtime container (runc by default; crun or gVisor's
// runsc by configuration) generated from the worker's spec, or, where no
// runtime or no privileges exist, as a plain child process with no
// isolation. Both implement scheduler.Launcher.
//
// The package owns the container's view of the host: which paths it sees,
// its user, namespaces and cgroup limits, and reading back how it ended
// (out-of-memory kills included). It must not decide which workers run or
// with what resources (the scheduler and package machine do), and it must
// never expose the server's data directory or one worker's files to
// another.
package sandbox
