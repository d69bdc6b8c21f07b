// Package kube is the Kubernetes launcher: it runs each warm worker as one
// bare pod that dials back to the server, and it implements
// scheduler.Launcher.
//
// It owns the pods' specification (requests equal to limits from the
// machine type, Pod Security "restricted", the token in a Secret volume),
// following their state through client-go informers, deleting what this
// server started (at keep_alive expiry, on Kill, and the leftovers of a
// previous run at start), the default-deny egress NetworkPolicy of worker
// pods, and shipping environments to nodes as content-addressed archives that
// an init container fetches from the server and verifies by hash.
//
// It must not decide policy (which machine type, which account, when a
// worker expires: the scheduler does), build environments (envbuild does),
// or map errors to what callers see (internal/server does): it reports
// failures with the domain sentinels of machine and envbuild, and a pod's
// end as a scheduler.Exit.
package kube
