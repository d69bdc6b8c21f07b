package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// isolatedNet prepares isolated workers' network namespaces.
type isolatedNet struct {
	stack     string // StackSlirp4netns or StackPasta
	stackPath string
	deny      []netip.Prefix // everything a worker cannot reach
}

// newIsolatedNet finds the stack's binary and works out the deny list.
func newIsolatedNet(stack, stackPath string, deny []netip.Prefix) (*isolatedNet, error) {
	if stack == "" {
		stack = StackSlirp4netns
	}
	if stack != StackPasta && stack != StackSlirp4netns {
		return nil, fmt.Errorf("%w: network stack %q: want %s or %s", ErrNetworkUnavailable, stack, StackSlirp4netns, StackPasta)
	}
	if stackPath == "" {
		stackPath = stack
	}
	path, err := exec.LookPath(stackPath)
	if err != nil {
		pkg := stack
		if stack == StackPasta {
			pkg = "passt"
		}
		return nil, fmt.Errorf("%w: %s not found (install the Debian package %s, or run workers with --network host)", ErrNetworkUnavailable, stackPath, pkg)
	}
	hostAddrs, err := hostAddresses()
	if err != nil {
		return nil, err
	}
	return &isolatedNet{stack: stack, stackPath: path, deny: deniedPrefixes(deny, hostAddrs)}, nil
}

// workerNet is one isolated worker's network: its namespace, held open by
// this process, and the user-mode stack serving it.
type workerNet struct {
	n     *isolatedNet
	ns    netns.NsHandle
	stack *exec.Cmd
	// ready is closed once the stack has configured the namespace, with
	// readyErr set if it could not.
	ready    chan struct{}
	readyErr error
	exited   chan struct{} // closed once the stack process has ended
	closers  []*os.File    // our ends of the stack's pipes
}

// path names the namespace for the runtime: this process's descriptor of
// it, which lives exactly as long as the worker needs it and leaves
// nothing to clean up if the server dies. (The stack is handed a copy of
// the descriptor instead: pasta drops the capability to look into another
// process's descriptors before it opens the namespace.)
func (w *workerNet) path() string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(w.ns))
}

// start makes a network namespace and starts the stack on it. The stack
// configures the interface while the container starts; waitReady waits
// for it and then adds the deny rules (before them, the stack could not
// check its gateway). No call runs in the worker before waitReady returns.
func (n *isolatedNet) start(bundle string) (_ *workerNet, err error) {
	ns, err := newNetns()
	if err != nil {
		return nil, fmt.Errorf("%w: new network namespace: %w", ErrNetworkUnavailable, err)
	}
	w := &workerNet{n: n, ns: ns, ready: make(chan struct{}), exited: make(chan struct{})}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	if err := n.startStack(w, bundle); err != nil {
		return nil, fmt.Errorf("%w: start %s: %w", ErrNetworkUnavailable, n.stack, err)
	}
	return w, nil
}

// newNetns creates a network namespace and returns a descriptor of it.
// unshare moves the calling thread, so it runs on a thread of its own that
// is given back to Go only once it is in the server's namespace again (and
// ends with its goroutine otherwise).
func newNetns() (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{-1, err}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			// unshare failed: the thread is where it was.
			runtime.UnlockOSThread()
			done <- result{-1, err}
			return
		}
		if err := netns.Set(orig); err != nil {
			ns.Close()
			done <- result{-1, fmt.Errorf("return to the server's namespace: %w", err)}
			return // locked: the thread ends with this goroutine
		}
		runtime.UnlockOSThread()
		done <- result{ns, nil}
	}()
	r := <-done
	return r.ns, r.err
}

// denyRulePriority is where the deny rules sit among the namespace's
// routing rules: before the main table (32766), so that no route, not even
// one to a directly connected network, can take a denied address out.
const denyRulePriority = 100

// configure brings loopback up (the runtime does not, in a namespace it
// did not make) and adds the rules that make every denied
// prefix unreachable. The worker has no capabilities in the namespace (it
// belongs to the host's user namespace), so it cannot remove them.
func (n *isolatedNet) configure(ns netns.NsHandle) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return err
	}
	// DNS to the stack's forwarder, before the rule that denies the
	// stack's network.
	dns := netlink.NewRule()
	dns.Family = unix.AF_INET
	dns.Priority = denyRulePriority
	dns.Table = unix.RT_TABLE_MAIN
	dns.Dst = &net.IPNet{IP: net.ParseIP(stackDNS).To4(), Mask: net.CIDRMask(32, 32)}
	dns.IPProto = unix.IPPROTO_UDP
	dns.Dport = netlink.NewRulePortRange(53, 53)
	if err := h.RuleAdd(dns); err != nil {
		return fmt.Errorf("allow DNS: %w", err)
	}
	for _, p := range n.deny {
		r := netlink.NewRule()
		r.Family = unix.AF_INET
		r.Priority = denyRulePriority + 1
		r.Dst = &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
		r.Type = unix.RTN_UNREACHABLE
		if err := h.RuleAdd(r); err != nil {
			return fmt.Errorf("deny %s: %w", p, err)
		}
	}
	return nil
}

// startStack starts the user-mode stack on the namespace, in the
// foreground, so that it ends with the worker (or with this process: its
// parent-death signal, and for slirp4netns the end of its exit pipe).
func (n *isolatedNet) startStack(w *workerNet, bundle string) error {
	nsFD, err := unix.Dup(int(w.ns))
	if err != nil {
		return err
	}
	nsFile := os.NewFile(uintptr(nsFD), "netns")
	defer nsFile.Close()
	cmd := exec.Command(n.stackPath)
	cmd.ExtraFiles = []*os.File{nsFile} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	var readyRead *os.File
	var watch *pidFileWatch
	switch n.stack {
	case StackPasta:
		pidFile := filepath.Join(bundle, "pasta.pid")
		if watch, err = watchPidFile(pidFile); err != nil {
			return err
		}
		cmd.Args = append(cmd.Args,
			"--foreground", "--quiet", "--netns", "/proc/self/fd/3", "--no-netns-quit", "--config-net",
			"--ipv4-only", "--address", stackAddress, "--netmask", "24", "--gateway", stackGateway,
			"--ns-ifname", stackDevice, "--dns-forward", stackDNS,
			// No port forwarding either way (the default "auto" of -T
			// would splice the worker's loopback to the host's), and the
			// gateway is not the host.
			"--tcp-ports", "none", "--udp-ports", "none", "--tcp-ns", "none", "--udp-ns", "none", "--no-map-gw",
			// It needs to stay root to enter a namespace of the host's user
			// namespace; it drops its capabilities and seccomp-filters
			// itself once started.
			"--runas", "0:0", "--pid", pidFile,
			// No log to syslog: errors go to its stderr.
			"--stderr",
		)
	case StackSlirp4netns:
		readyR, readyW, err := os.Pipe()
		if err != nil {
			return err
		}
		exitR, exitW, err := os.Pipe()
		if err != nil {
			readyR.Close()
			readyW.Close()
			return err
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, readyW, exitR) // fds 4 and 5
		cmd.Args = append(cmd.Args, "--configure", "--mtu=65520", "--disable-host-loopback",
			"--enable-sandbox", "--enable-seccomp",
			"--netns-type=path", "--ready-fd=4", "--exit-fd=5", "/proc/self/fd/3", stackDevice)
		readyRead = readyR
		w.closers = append(w.closers, exitW)
		defer readyW.Close()
		defer exitR.Close()
	}
	var stderr limitedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		if watch != nil {
			watch.Close()
		}
		if readyRead != nil {
			readyRead.Close()
		}
		return err
	}
	w.stack = cmd
	go func() {
		cmd.Wait()
		close(w.exited)
	}()
	go func() {
		defer close(w.ready)
		if watch != nil {
			defer watch.Close()
			for !watch.written() {
				select {
				case <-w.exited: // its stderr is read whole once it has ended
					if !watch.written() {
						w.readyErr = fmt.Errorf("%s exited before the network was ready: %s", n.stack, stderr.String())
					}
					return
				case _, ok := <-watch.changed:
					if !ok {
						w.readyErr = fmt.Errorf("the watch on %s's pid file ended", n.stack)
						return
					}
				}
			}
			return
		}
		defer readyRead.Close()
		var b [1]byte
		if _, err := readyRead.Read(b[:]); err != nil {
			<-w.exited // its stderr is read whole once it has ended
			w.readyErr = fmt.Errorf("%s exited before the network was ready: %s", n.stack, stderr.String())
		}
	}()
	return nil
}

// waitReady waits until the stack has configured the namespace.
func (w *workerNet) waitReady(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	select {
	case <-w.ready:
		if w.readyErr != nil {
			return fmt.Errorf("%w: %w", ErrNetworkUnavailable, w.readyErr)
		}
		if err := w.n.configure(w.ns); err != nil {
			return fmt.Errorf("%w: configure the worker's network namespace: %w", ErrNetworkUnavailable, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the worker's network: %w", ctx.Err())
	}
}

// close ends the stack and lets the namespace go.
func (w *workerNet) close() error {
	var errs []error
	if w.stack != nil {
		if err := w.stack.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, err)
		}
		select {
		case <-w.exited:
		case <-time.After(5 * time.Second):
			errs = append(errs, fmt.Errorf("network stack %d did not exit", w.stack.Process.Pid))
		}
	}
	for _, f := range w.closers {
		f.Close()
	}
	if w.ns >= 0 {
		if err := w.ns.Close(); err != nil {
			errs = append(errs, err)
		}
		w.ns = -1
	}
	return errors.Join(errs...)
}

// limitedBuffer keeps the first bytes a stack writes to its stderr: enough
// to say why it failed.
type limitedBuffer struct {
	buf []byte
}

const stackStderrBytes = 4096

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := stackStderrBytes - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string { return strconv.Quote(string(b.buf)) }
