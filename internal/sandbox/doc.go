// Package sandbox is the local launcher: it starts workers on this host.
// LocalLauncher implements scheduler.Launcher: it turns the launcher-neutral
// spec into a HostSpec (the agent's command line, the environment's paths
// through a Resolver, the account's data directory) and hands the agent
// either its stdio pipes or a token to dial back with. A HostLauncher then
// runs the agent either inside an OCI runtime container (runc by default;
// crun or gVisor's runsc by configuration) generated from the HostSpec, or,
// where no runtime or no privileges exist, as a plain child process with no
// isolation.
//
// The package owns the container's view of the host: which paths it sees,
// its user, namespaces and cgroup limits (as the spec it writes), the
// runtime's life cycle (driven through github.com/containerd/go-runc, the
// runtime in the foreground with the agent's stdio pipes as its own), and
// reading back how a worker ended (out-of-memory kills included). Cgroup
// files are read and written only through its subpackage cgroups. Under
// NetworkIsolated it also makes each worker's network namespace, with a
// user-mode stack (pasta or slirp4netns) for outbound access and routing
// rules that leave no route to the host's own addresses, link-local or
// denied ranges (network.go).
//
// It must not decide which workers run or with what resources (the
// scheduler and package machine do), must not speak the agent's protocol
// (it hands the scheduler a byte stream), and must never expose the
// server's data directory or one worker's files to another.
package sandbox
