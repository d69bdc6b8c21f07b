// Package storage owns the persistent /data volume of each account: one
// directory per account under <data-dir>/data/<account>, which workers of
// that account see read-write at /data, and the sync that uploads a local
// tree into it incrementally (plans, staged uploads, commits). Its gRPC face
// is internal/server's Storage service; nothing here speaks gRPC.
//
// Everything it writes into an account directory goes through an os.Root
// opened on that directory, so no path or symbolic link (the client's, or
// one a worker left in /data) can make it touch anything outside. Content
// arrives in chunks and is written to a staging directory inside the
// account directory, checked against its announced size and SHA-256, and
// only then renamed into place: a file is either the old version or the
// complete new one, never a partial one. What is staged counts against the
// account's quota before a byte is written.
//
// Where the host allows it, each account directory is the mount point of
// the account's own ext4 filesystem image (LoopVolumes, through a loop
// device), whose size is the quota: a function that writes past it gets
// ENOSPC, and nothing it writes reaches the host's filesystem. Elsewhere
// the quota binds sync_dir only.
//
// It does not decide who the caller is (internal/auth does), map its errors
// to status codes (internal/server does) nor how /data is
// mounted into a worker (the launchers do, from AccountDir).
package storage
