// Package cgroups is atoll's one place that knows how this host mounts
// cgroups (v1, v2, or the hybrid of v1 controllers beside an empty v2
// hierarchy) and reads or writes cgroup files: where a worker's memory and
// cpu cgroups live, its CPU quota, its out-of-memory kill count, and the
// limits of the server's own cgroup that cap the host's capacity.
//
// It is built on github.com/opencontainers/cgroups (the cgroup file
// access and parsing runc uses) and github.com/moby/sys/mountinfo. It
// must not create workers' own cgroups or apply their limits: the OCI runtime
// does that from the spec package sandbox writes. It never decides
// resources (package machine does) and keeps no state besides the Layout
// it returns. The only cgroups it makes are inside a
// worker's own: SeparateAgent gives the worker's agent a cpu cgroup beside
// the one of the function's processes.
package cgroups
