package serverapp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/atoll-dev/atoll/internal/sandbox"
)

// Workers whose network is not the host's reach the server through unix
// sockets in one directory, mounted read-only into every worker: the API
// (nested calls, authenticated by each worker's token as on TCP) and,
// under --worker-transport connect, the dial-back listener.
const (
	workerAPIDir    = "worker-api"
	workerAPISocket = "api.sock"
	dialBackSocket  = "dialback.sock"
)

// maxSocketPath is the longest path a unix socket can be bound at
// (sun_path holds 108 bytes with its terminating NUL).
const maxSocketPath = 107

// workersUseSockets says whether workers reach the server through the
// unix sockets of workerAPIDir: whenever their network is not the host's,
// where the server's loopback address is not theirs.
func (a *app) workersUseSockets() bool {
	return a.cfg.Launcher != LauncherKubernetes && a.cfg.Network != sandbox.NetworkHost
}

// workerSocketDir makes the directory of the workers' sockets, emptied of
// what an earlier run left (its sockets are dead): <data-dir>/worker-api,
// or, where that path is too long for a socket's, a short directory named
// for the data directory under /run/atoll (root) or the temporary
// directory (other users).
func (a *app) workerSocketDir() (string, error) {
	dir := filepath.Join(a.dataDir, workerAPIDir)
	if len(filepath.Join(dir, dialBackSocket)) > maxSocketPath {
		short, err := a.shortSocketBase()
		if err != nil {
			return "", fmt.Errorf("worker sockets: %w", err)
		}
		dir = short
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("worker sockets: %w", err)
	}
	// Search permission for all: workers run as an unprivileged user.
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("worker sockets: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		return "", fmt.Errorf("worker sockets: %w", err)
	}
	a.undo = append(a.undo, func() { os.RemoveAll(dir) })
	return dir, nil
}

// privateDir makes dir, or accepts it as it is, only if it is a directory
// of this user's that no one else may write to: in a shared temporary
// directory, another user could have made it first.
// shortSocketBase is where this data directory's sockets go when their
// own paths would be too long for a socket's: a name made from the data
// directory, in a private directory under /run/atoll (root) or the
// temporary directory (other users).
func (a *app) shortSocketBase() (string, error) {
	sum := sha256.Sum256([]byte(a.dataDir))
	parent := filepath.Join(os.TempDir(), fmt.Sprintf("atoll-%d", os.Getuid()))
	if os.Getuid() == 0 {
		parent = "/run/atoll"
	}
	if err := privateDir(parent); err != nil {
		return "", err
	}
	return filepath.Join(parent, hex.EncodeToString(sum[:8])), nil
}

func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s must be a directory of uid %d that no one else can write to", dir, os.Getuid())
	}
	return nil
}

// listenUnix listens on a socket every worker may connect to: who
// connects is decided by the token each presents.
func listenUnix(path string) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("the workers' socket %s is longer than the %d bytes a unix socket path may have", path, maxSocketPath)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen for workers: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen for workers: %w", err)
	}
	return l, nil
}

// serveWorkerAPI serves the gRPC services on the workers' API socket and
// points the launcher's workers at it for nested calls. It runs after
// registerServices, which pointed them at the TCP listener.
func (a *app) serveWorkerAPI(context.Context) error {
	if !a.workersUseSockets() {
		return nil
	}
	l, err := listenUnix(filepath.Join(a.workerSockets, workerAPISocket))
	if err != nil {
		return err
	}
	a.local.SetServerAddr("unix:" + l.Addr().String())
	log := a.log.With("component", "workers")
	go func() {
		if err := a.gs.Serve(l); err != nil {
			log.Error("worker API socket stopped", "err", err)
		}
	}()
	log.Info("serving workers' nested calls", "socket", l.Addr().String())
	return nil
}

// localSocketCreds wraps the server's TLS credentials so that connections
// on the workers' unix socket, which never leave the kernel, go without
// TLS (the worker has no certificate to check it against).
type localSocketCreds struct {
	credentials.TransportCredentials
}

func (c localSocketCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if _, ok := conn.(*net.UnixConn); ok {
		return insecure.NewCredentials().ServerHandshake(conn)
	}
	return c.TransportCredentials.ServerHandshake(conn)
}

func (c localSocketCreds) Clone() credentials.TransportCredentials {
	return localSocketCreds{c.TransportCredentials.Clone()}
}
