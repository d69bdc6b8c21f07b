package sandbox

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Worker networks, as --network names them.
const (
	// NetworkIsolated gives each worker a network namespace of its own,
	// with outbound access through a user-mode network stack and no route
	// to the host, other workers, link-local or denied ranges.
	NetworkIsolated = "isolated"
	// NetworkHost shares the host's network namespace (loopback included).
	NetworkHost = "host"
	// NetworkNone gives each worker a namespace with loopback only.
	NetworkNone = "none"
)

// User-mode network stacks for NetworkIsolated.
const (
	// StackSlirp4netns is slirp4netns, the default: on the 2-CPU
	// development machine it added no measurable time to a cold start,
	// where pasta added 40 to 120 ms (its own start-up takes more CPU);
	// it also confines itself (--enable-sandbox, --enable-seccomp) and
	// refuses the host's loopback (--disable-host-loopback).
	StackSlirp4netns = "slirp4netns"
	// StackPasta is pasta, of the Debian package passt: slower to start,
	// faster to forward (it translates to host sockets without a TCP stack
	// of its own), for workers that move a lot of data.
	StackPasta = "pasta"
)

// DefaultDeny is what an isolated worker may not reach unless the
// operator says otherwise (--network-deny): the private ranges of RFC
// 1918 and the shared address space of carrier-grade NAT (RFC 6598),
// where a host's neighbours and internal services live.
var DefaultDeny = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"}

// alwaysDenied is never reachable from an isolated worker, whatever the
// deny list: link-local addresses (the cloud metadata endpoint is
// 169.254.169.254), "this network", multicast and the reserved range
// with the broadcast address (which reach the host's neighbours), and the
// user-mode stack's own virtual network (its gateway stands for the host).
var alwaysDenied = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix(stackSubnet),
}

// The isolated worker's side of the user-mode stack: the addresses
// slirp4netns --configure uses, given to pasta as well.
const (
	stackSubnet  = "10.0.2.0/24"
	stackAddress = "10.0.2.100"
	stackGateway = "10.0.2.2"
	// stackDNS is where the worker sends DNS queries; the stack forwards
	// them to the host's resolver. It is the one address of the virtual
	// network a worker may reach, and only on UDP port 53.
	stackDNS = "10.0.2.3"
	// stackDevice is the worker's network interface.
	stackDevice = "tap0"
)

// ParseDeny parses a comma-separated list of IPv4 CIDR prefixes
// (--network-deny); "" denies nothing beyond what is always denied.
func ParseDeny(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			if a, aerr := netip.ParseAddr(f); aerr == nil {
				p, err = a.Prefix(a.BitLen())
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR prefix such as 10.0.0.0/8", f)
		}
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("%q: only IPv4 prefixes can be denied (isolated workers have no IPv6 route out)", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// deniedPrefixes is everything an isolated worker cannot reach: the
// configured deny list, what is always denied, and the host's own
// addresses, through which the stack would reach services listening on
// every interface of the host.
func deniedPrefixes(deny []netip.Prefix, hostAddrs []netip.Addr) []netip.Prefix {
	out := slices.Clone(alwaysDenied)
	out = append(out, deny...)
	for _, a := range hostAddrs {
		if a.Is4() && !a.IsLoopback() {
			out = append(out, netip.PrefixFrom(a, 32))
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// hostAddresses lists this host's own interface addresses.
func hostAddresses() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list the host's addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// networkNamespace is the worker's network namespace in its spec: a new
// one (loopback only) for NetworkNone, the one prepared at nsPath for
// NetworkIsolated, none (the host's) otherwise.
func networkNamespace(in specInputs) []specs.LinuxNamespace {
	switch {
	case in.netnsPath != "":
		return []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: in.netnsPath}}
	case in.networkNone:
		return []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}
	}
	return nil
}

// networkMounts puts the isolated worker's resolver configuration over the
// host's: the host's names resolvers the worker has no route to.
func networkMounts(in specInputs) []specs.Mount {
	if in.resolvConf == "" {
		return nil
	}
	return []specs.Mount{{Destination: "/etc/resolv.conf", Type: "bind", Source: in.resolvConf, Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}}}
}

// resolvConfContent is the isolated worker's /etc/resolv.conf: the stack's
// DNS forwarder, with the host's search domains and options.
func resolvConfContent(host []byte) []byte {
	var b strings.Builder
	b.WriteString("# written by atoll: the user-mode network stack forwards DNS to the host's resolver\n")
	b.WriteString("nameserver " + stackDNS + "\n")
	for _, line := range strings.Split(string(host), "\n") {
		fields := strings.Fields(line)
		if len(fields) > 0 && (fields[0] == "search" || fields[0] == "domain" || fields[0] == "options") {
			b.WriteString(line + "\n")
		}
	}
	return []byte(b.String())
}

// hostResolvConf is the host's resolver configuration, or nil where
// /etc/resolv.conf is not a regular file: a symlink (systemd-resolved's)
// cannot have a file mounted over it inside the read-only /etc.
func hostResolvConf() ([]byte, bool) {
	fi, err := os.Lstat("/etc/resolv.conf")
	if err != nil || !fi.Mode().IsRegular() {
		return nil, false
	}
	data, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil, false
	}
	return data, true
}
