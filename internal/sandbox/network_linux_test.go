package sandbox

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// requireStack skips where the user-mode stack is not installed; CI
// installs both (scripts/setup.sh), and ATOLL_REQUIRE_SANDBOX turns the
// skip into a failure there.
func requireStack(t *testing.T, stack string) {
	t.Helper()
	if _, err := exec.LookPath(stack); err != nil {
		if os.Getenv("ATOLL_REQUIRE_SANDBOX") == "1" {
			t.Fatalf("%s is not installed", stack)
		}
		t.Skipf("%s is not installed", stack)
	}
}

// hostListener opens a TCP listener on addr of the host, answering
// nothing; the test's traffic stays on this host.
func hostListener(t *testing.T, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

// hostNonLoopback is one of this host's own non-loopback IPv4 addresses.
func hostNonLoopback(t *testing.T) string {
	addrs, err := hostAddresses()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.Is4() && !a.IsLoopback() {
			return a.String()
		}
	}
	return ""
}

func TestOCINetworkIsolated(t *testing.T) {
	for _, stack := range []string{StackPasta, StackSlirp4netns} {
		t.Run(stack, func(t *testing.T) {
			requireStack(t, stack)
			f := newOCIFixture(t, KindRunc, func(o *OCIOptions) {
				o.Network = NetworkIsolated
				o.NetworkStack = stack
				o.NetworkDeny = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.0.0/16")}
			})
			loopback := hostListener(t, "127.0.0.1:0")
			_, port, _ := net.SplitHostPort(hostListener(t, "0.0.0.0:0"))
			a := f.start(t, helperSpec(t, workerID(t)))
			var r report
			a.callJSON("report", &r)
			if strings.Join(r.Interfaces, " ") != "lo "+stackDevice {
				t.Errorf("interfaces = %v, want lo and %s", r.Interfaces, stackDevice)
			}
			refused := func(what, cmd string) {
				t.Helper()
				got := a.call(cmd)
				if got == "dial: " {
					t.Errorf("%s: %s succeeded from an isolated worker", what, cmd)
				}
				t.Logf("%s: %s", what, got)
			}
			unreachable := func(what, cmd string) {
				t.Helper()
				if got := a.call(cmd); !strings.Contains(got, "network is unreachable") {
					t.Errorf("%s: %s = %q, want network is unreachable", what, cmd, got)
				}
			}
			refused("the host's loopback", "dial tcp "+loopback)
			if ip := hostNonLoopback(t); ip != "" {
				unreachable("the host's own address", "dial tcp "+net.JoinHostPort(ip, port))
			}
			unreachable("cloud metadata", "dial udp 169.254.169.254:80")
			unreachable("link-local", "dial udp 169.254.1.1:53")
			unreachable("a denied private range", "dial udp 10.1.2.3:53")
			unreachable("a denied private range", "dial udp 192.168.1.1:53")
			unreachable("the stack's gateway (the host)", "dial udp "+stackGateway+":53")
			unreachable("multicast", "dial udp 224.0.0.251:5353")
			// A route out exists: a UDP connect picks it and sends nothing.
			if got := a.call("dial udp 1.1.1.1:53"); got != "dial: " {
				t.Errorf("no route to a public address: %s", got)
			}
			if got := a.call("dial udp " + stackDNS + ":53"); got != "dial: " {
				t.Errorf("no route to the DNS forwarder: %s", got)
			}
		})
	}
}

// TestOCINetworkIsolatedAbstractSockets: abstract unix sockets belong to
// a network namespace, so one worker's cannot be reached from another.
func TestOCINetworkIsolatedAbstractSockets(t *testing.T) {
	requireStack(t, StackSlirp4netns)
	f := newOCIFixture(t, KindRunc, func(o *OCIOptions) { o.Network = NetworkIsolated })
	a := f.start(t, helperSpec(t, workerID(t)))
	b := f.start(t, helperSpec(t, workerID(t)))
	name := "@atoll-test-" + workerID(t)
	if got := a.call("listen-abstract " + name); got != "listen: " {
		t.Fatalf("listen in worker a: %s", got)
	}
	if got := a.call("dial unix " + name); got != "dial: " {
		t.Fatalf("worker a cannot reach its own socket: %s", got)
	}
	if got := b.call("dial unix " + name); !strings.Contains(got, "connection refused") {
		t.Errorf("worker b dialing worker a's abstract socket: %q, want connection refused", got)
	}
	// Nor the host's.
	l, err := net.Listen("unix", name+"-host")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := a.call("dial unix " + name + "-host"); !strings.Contains(got, "connection refused") {
		t.Errorf("worker dialing the host's abstract socket: %q, want connection refused", got)
	}
}

func TestDeniedPrefixes(t *testing.T) {
	deny, err := ParseDeny(" 10.0.0.0/8, 192.168.1.7 ,172.16.0.0/12")
	if err != nil {
		t.Fatal(err)
	}
	got := deniedPrefixes(deny, []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("fd00::2")})
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	want := "0.0.0.0/8 10.0.0.0/8 10.0.2.0/24 169.254.0.0/16 172.16.0.0/12 192.0.2.2/32 192.168.1.7/32 224.0.0.0/4 240.0.0.0/4"
	if strings.Join(s, " ") != want {
		t.Errorf("denied = %s\nwant      %s", strings.Join(s, " "), want)
	}
	for _, bad := range []string{"10.0.0.0/33", "fd00::/8", "example.com"} {
		if _, err := ParseDeny(bad); err == nil {
			t.Errorf("ParseDeny(%q) accepted it", bad)
		}
	}
	if d, err := ParseDeny(""); err != nil || len(d) != 0 {
		t.Errorf("ParseDeny(\"\") = %v, %v", d, err)
	}
}

// TestColdStartNetwork measures, as TestColdStart does, what each worker
// network adds to a runc cold start: the networks take turns, run by run,
// so that a noisy host weighs on each alike; it logs the medians.
func TestColdStartNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	const runs = 25
	type variant struct {
		name  string
		f     *ociFixture
		times []time.Duration
	}
	var variants []*variant
	for _, c := range []struct{ network, stack string }{
		{NetworkHost, ""}, {NetworkIsolated, StackPasta}, {NetworkIsolated, StackSlirp4netns},
	} {
		if c.stack != "" {
			requireStack(t, c.stack)
		}
		f := newOCIFixture(t, KindRunc, func(o *OCIOptions) { o.Network, o.NetworkStack = c.network, c.stack })
		variants = append(variants, &variant{name: strings.TrimSuffix(c.network+" "+c.stack, " "), f: f})
	}
	for range runs {
		for _, v := range variants {
			spec := helperSpec(t, workerID(t))
			spec.Machine = testXS
			start := time.Now()
			p, err := v.f.l.Start(context.Background(), spec)
			if err != nil {
				t.Fatal(err)
			}
			a := newAgent(t, p)
			if got := a.call("echo x"); got != "x" {
				t.Fatalf("echo = %q", got)
			}
			v.times = append(v.times, time.Since(start))
			a.p.Kill()
			a.wait()
		}
	}
	for _, v := range variants {
		slices.Sort(v.times)
		t.Logf("cold start p50 runc XS, network %s: %s", v.name, v.times[len(v.times)/2].Round(100*time.Microsecond))
	}
}

func TestNewOCIRefusesIsolatedNetworks(t *testing.T) {
	requireRuntime(t, KindRunc)
	tests := []struct {
		name string
		opts OCIOptions
		want error
	}{
		{"missing stack", OCIOptions{StateDir: t.TempDir(), Network: NetworkIsolated, NetworkStackPath: "/nonexistent/slirp4netns"}, ErrNetworkUnavailable},
		{"unknown stack", OCIOptions{StateDir: t.TempDir(), Network: NetworkIsolated, NetworkStack: "vpnkit"}, ErrNetworkUnavailable},
		{"runsc", OCIOptions{StateDir: t.TempDir(), Network: NetworkIsolated, Runtime: KindRunsc, RuntimePath: "/bin/true"}, ErrNetworkUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewOCI(tt.opts)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("NewOCI = %v, want an error (%v)", err, tt.want)
			}
			t.Log(err)
		})
	}
}
