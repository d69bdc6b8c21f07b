package serverapp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/atoll-dev/atoll/internal/sandbox"
	"github.com/atoll-dev/atoll/internal/workerproto"
)

// launcher is how workers run on this host, its kind, and the warning that
// workers are not isolated ("" when they are).
type launcher struct {
	sandbox.HostLauncher
	Kind    string
	Warning string
}

// startLauncher picks how workers run on this host: the requested or
// detected OCI runtime, proven by running a trivial container, else plain
// processes with a warning that workers are not isolated.
func (a *app) startLauncher(ctx context.Context) error {
	if a.cfg.Launcher == LauncherKubernetes {
		// Workers run in pods: the cluster's runtime isolates them.
		a.launcher = launcher{Kind: LauncherKubernetes}
		return nil
	}
	log := a.log.With("component", "sandbox")
	stateDir := filepath.Join(a.dataDir, "sandbox")
	want := a.cfg.Sandbox
	kind, warning, err := sandbox.Detect(want)
	if err != nil {
		return fmt.Errorf("--sandbox: %w", err)
	}
	if kind != sandbox.KindProcess {
		oci, err := sandbox.NewOCI(sandbox.OCIOptions{
			Runtime:   kind,
			StateDir:  stateDir,
			Protected: []string{a.dataDir},
			Network:   a.cfg.Network,
			Logger:    log,

			NetworkStack: a.cfg.NetworkStack,
			NetworkDeny:  a.cfg.NetworkDeny,
		})
		if err == nil {
			// After the workers are gone (the scheduler's undo runs first).
			a.undo = append(a.undo, func() {
				if err := oci.Close(); err != nil {
					log.Warn("removing the sandbox's run directory", "err", err)
				}
			})
			err = oci.RemoveStale(ctx)
		}
		if err == nil {
			err = oci.Check(ctx)
		}
		if errors.Is(err, sandbox.ErrNetworkUnavailable) {
			// Not a reason to give up on isolating workers altogether.
			return fmt.Errorf("--network %s: %w", a.cfg.Network, err)
		}
		if err == nil {
			a.launcher = launcher{HostLauncher: oci, Kind: kind, Warning: warning}
			a.warnUnisolated()
			return nil
		}
		if want != "" && want != "auto" {
			return fmt.Errorf("--sandbox %s does not work on this host: %w", want, err)
		}
		warning = fmt.Sprintf("the %s sandbox does not work here (%v); workers run as plain processes and are NOT isolated from the server or each other", kind, err)
		kind = sandbox.KindProcess
	}
	a.launcher = launcher{
		HostLauncher: sandbox.NewProcess(sandbox.ProcessOptions{StateDir: stateDir, Logger: log}),
		Kind:         kind, Warning: warning,
	}
	a.warnUnisolated()
	return nil
}

// startLocalLauncher puts the host launcher to work as the scheduler's
// Launcher: it turns launcher-neutral specs into agents' command lines and
// host paths, with workers on pipes or dialing back.
func (a *app) startLocalLauncher(context.Context) error {
	if a.cfg.Launcher == LauncherKubernetes {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("locate the atoll binary: %w", err)
	}
	agent := sandbox.AgentBinary(exe)
	a.log.Debug("worker agent", "component", "sandbox", "path", agent)
	opts := sandbox.LocalOptions{
		Host:         a.launcher.HostLauncher,
		Environments: sandbox.EnvbuildResolver{Builder: a.builder},
		AgentPath:    agent,
		SDKDir:       a.sdkDir,
		Transport:    a.cfg.WorkerTransport,
		Logger:       a.log.With("component", "sandbox"),
	}
	if a.workersUseSockets() {
		if a.workerSockets, err = a.workerSocketDir(); err != nil {
			return err
		}
		opts.ServerSocketDir = a.workerSockets
	}
	if a.cfg.WorkerTransport == sandbox.TransportConnect {
		dialBack, err := a.listenWorkers()
		if err != nil {
			return err
		}
		opts.DialBack, opts.TokenDir = dialBack, filepath.Join(a.dataDir, "worker-tokens")
	}
	if a.local, err = sandbox.NewLocal(opts); err != nil {
		return fmt.Errorf("--worker-transport: %w", err)
	}
	a.workers = a.local
	return nil
}

// listenWorkers opens the listener workers dial back to under
// --worker-transport connect, and serves its handshakes until closed: on
// loopback where workers share the host's network, else a unix socket
// mounted into them.
func (a *app) listenWorkers() (*workerproto.Listener, error) {
	log := a.log.With("component", "workers")
	var lis net.Listener
	var err error
	if a.workersUseSockets() {
		lis, err = listenUnix(filepath.Join(a.workerSockets, dialBackSocket))
	} else {
		lis, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return nil, fmt.Errorf("listen for workers: %w", err)
	}
	l := workerproto.NewListener(lis, log)
	go func() {
		if err := l.Serve(); err != nil {
			log.Error("worker listener stopped", "err", err)
		}
	}()
	a.undo = append(a.undo, func() { l.Close() })
	log.Info("listening for workers", "addr", l.Addr().String())
	return l, nil
}

func (a *app) warnUnisolated() {
	if a.launcher.Warning != "" {
		a.log.Warn(a.launcher.Warning, "sandbox", a.launcher.Kind)
	}
}
