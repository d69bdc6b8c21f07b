package sandbox

import (
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestBuildSpecNetworks(t *testing.T) {
	netns := func(s *specs.Spec) (specs.LinuxNamespace, bool) {
		for _, ns := range s.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				return ns, true
			}
		}
		return specs.LinuxNamespace{}, false
	}
	for _, tc := range []struct {
		name                 string
		mutate               func(*specInputs)
		wantNetns            bool
		wantPath, wantResolv string
	}{
		{name: "host", mutate: func(*specInputs) {}},
		{name: "none", mutate: func(in *specInputs) { in.networkNone = true }, wantNetns: true},
		{
			name: "isolated",
			mutate: func(in *specInputs) {
				in.netnsPath, in.resolvConf = "/proc/1/fd/7", "/var/lib/atoll/sandbox/bundles/w1/resolv.conf"
			},
			wantNetns: true, wantPath: "/proc/1/fd/7", wantResolv: "/var/lib/atoll/sandbox/bundles/w1/resolv.conf",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := testInputs()
			tc.mutate(&in)
			s, err := buildSpec(testWorker(), in)
			if err != nil {
				t.Fatal(err)
			}
			ns, ok := netns(s)
			if ok != tc.wantNetns || ns.Path != tc.wantPath {
				t.Errorf("network namespace = %+v (present %v), want present %v with path %q", ns, ok, tc.wantNetns, tc.wantPath)
			}
			m, ok := mountByDest(s, "/etc/resolv.conf")
			if (tc.wantResolv != "") != ok || m.Source != tc.wantResolv {
				t.Errorf("/etc/resolv.conf mount = %+v (present %v), want source %q", m, ok, tc.wantResolv)
			}
			if ok && !strings.Contains(strings.Join(m.Options, ","), "ro") {
				t.Errorf("/etc/resolv.conf mounted writable: %v", m.Options)
			}
		})
	}
}

func TestResolvConfContent(t *testing.T) {
	got := string(resolvConfContent([]byte("nameserver 127.0.0.53\nsearch example.internal\noptions edns0 trust-ad\n")))
	for _, want := range []string{"nameserver " + stackDNS + "\n", "search example.internal\n", "options edns0 trust-ad\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("resolv.conf lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "127.0.0.53") {
		t.Errorf("resolv.conf keeps the host's resolver, which an isolated worker cannot reach:\n%s", got)
	}
}
