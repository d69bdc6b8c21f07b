package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/sandbox"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/server"
	"github.com/atoll-dev/atoll/internal/serverapp"
	"github.com/atoll-dev/atoll/internal/storage"
	"github.com/atoll-dev/atoll/python"
)

func newServerCommand() *cobra.Command {
	var cfg serverapp.Config
	var dataQuotaFlag, logLevel, networkDeny string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the atoll server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Logger, err = newLogger(logLevel); err != nil {
				return err
			}
			if cfg.DataQuota, err = dataQuota(dataQuotaFlag); err != nil {
				return err
			}
			if cfg.NetworkDeny, err = sandbox.ParseDeny(networkDeny); err != nil {
				return fmt.Errorf("--network-deny: %w", err)
			}
			if cfg.RuntimeLock, err = runtimeLock(); err != nil {
				return err
			}
			cfg.Version = version
			return serverapp.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", serverapp.DefaultListen, "address to serve gRPC on (host:port)")
	cmd.PersistentFlags().StringVar(&cfg.DataDir, "data-dir", defaultDataDir(), "directory holding all server state")
	f.StringVar(&cfg.Sandbox, "sandbox", "auto", "worker sandbox: auto, runc, crun, runsc or process (no isolation)")
	f.StringVar(&cfg.Network, "network", sandbox.NetworkIsolated, "worker network: isolated (a network namespace each, outbound through a user-mode stack, no route to the host or --network-deny), host (the host's) or none (loopback only)")
	f.StringVar(&cfg.WorkerTransport, "worker-transport", sandbox.TransportPipes, "how workers reach the server: pipes, or connect (they dial back to a loopback listener, as cluster workers do)")
	f.StringVar(&cfg.MachinesFile, "config", "", "YAML file amending machine types, GPUs and capacity")
	f.DurationVar(&cfg.QueueTimeout, "queue-timeout", scheduler.DefaultQueueTimeout, "how long a call waits for capacity before failing")
	f.Int64Var(&cfg.EnvMaxBytes, "env-max-bytes", 0, "evict least recently used environments beyond this total size (0: no limit)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.AddCommand(newServerStopCommand(&cfg.DataDir), newServerStatusCommand(&cfg.DataDir))
	f.BoolVar(&cfg.Insecure, "insecure", false, "allow listening on a non-loopback address without TLS")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate to serve TLS with (with --tls-key)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&cfg.UV, "uv", "", "the uv binary that builds environments (default: uv on PATH)")
	f.BoolVar(&cfg.WheelsOnly, "wheels-only", false, "install pre-built wheels only: building a source distribution runs its code on this host (in the build sandbox, where there is one)")
	f.BoolVar(&cfg.AllowLocalRequirements, "allow-local-requirements", false, "let requirements name paths on this host (pkg @ file:///...)")
	f.StringVar(&dataQuotaFlag, "data-quota", "10GiB", "each account's /data quota (0: no limit)")
	f.DurationVar(&cfg.RunRetention, "run-retention", 30*24*time.Hour, "how long finished runs and their logs are kept (0: forever)")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", serverapp.DefaultShutdownGrace, "on SIGTERM, how long calls in flight may finish before their workers are killed")
	f.IntVar(&cfg.Edge.MaxMessageBytes, "max-message-bytes", server.DefaultMaxMessageBytes, "largest request or response message of an authenticated caller (a call's function and arguments, or its result)")
	f.DurationVar(&cfg.Edge.HandshakeTimeout, "handshake-timeout", server.DefaultHandshakeTimeout, "how long a new connection may take for its TLS and HTTP/2 handshakes")
	f.DurationVar(&cfg.Edge.IdleTimeout, "idle-timeout", server.DefaultIdleTimeout, "close connections with no call in flight for this long")
	f.IntVar(&cfg.Edge.MaxUnauthenticatedConns, "max-unauthenticated-conns", server.DefaultMaxUnauthenticatedConns, "connections held at once on which no call has authenticated; beyond it the oldest is closed")
	f.StringVar(&cfg.Dashboard, "dashboard", "", "serve the web dashboard and Prometheus /metrics on this address (e.g. "+serverapp.DefaultDashboard+"; off when empty)")
	f.StringSliceVar(&cfg.DashboardAdmins, "dashboard-admin-account", nil, "accounts whose keys see every account on the dashboard (repeatable)")
	f.StringVar(&cfg.MetricsTokenFile, "metrics-token-file", "", "file holding a bearer token that /metrics then requires")
	f.StringVar(&cfg.DataVolumes, "data-volumes", storage.VolumesAuto, "how accounts' /data is kept: loop (an ext4 image each, mounted through a loop device: the quota binds every write), directory (the quota binds sync_dir only) or auto (loop where the host allows it)")
	f.StringVar(&cfg.NetworkStack, "network-stack", sandbox.StackSlirp4netns, "user-mode network stack of isolated workers: slirp4netns (starts faster) or pasta (Debian package passt; forwards faster)")
	f.StringVar(&networkDeny, "network-deny", strings.Join(sandbox.DefaultDeny, ","), "IPv4 prefixes isolated workers cannot reach, comma-separated (\"\": none), besides link-local 169.254.0.0/16 and the host's own addresses, which they never reach")
	f.DurationVar(&cfg.MaxCallTimeout, "max-call-timeout", 24*time.Hour, "the longest timeout= a call may ask for, and the timeout of calls that set none")
	addKubeFlags(f, &cfg)
	return cmd
}

func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "atoll", "server")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "atoll-server")
	}
	return filepath.Join(home, ".local", "share", "atoll", "server")
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// dataQuota parses --data-quota: bytes ("10GiB", "500MB", "1073741824");
// 0 means no limit.
func dataQuota(s string) (int64, error) {
	if strings.TrimSpace(s) == "" {
		return storage.DefaultQuotaBytes, nil
	}
	n, err := machine.ParseByteSize(s)
	if err != nil {
		return 0, fmt.Errorf("--data-quota %q: %w", s, err)
	}
	if n == 0 {
		return storage.NoQuota, nil
	}
	return int64(n), nil
}

// runtimeLockEnv names a requirements file that replaces the embedded
// runtime lock: scripts/test-latest.sh runs the tests on the newest releases
// with it.
const runtimeLockEnv = "ATOLL_RUNTIME_LOCK"

// runtimeLock is what workers' runtimes are built from: python.RuntimeLock
// unless ATOLL_RUNTIME_LOCK names another file.
func runtimeLock() ([]byte, error) {
	path := os.Getenv(runtimeLockEnv)
	if path == "" {
		return python.RuntimeLock, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", runtimeLockEnv, err)
	}
	return data, nil
}
