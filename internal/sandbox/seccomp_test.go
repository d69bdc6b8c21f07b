package sandbox

import (
	"runtime"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestDefaultSeccompDeniesByDefault(t *testing.T) {
	s := DefaultSeccomp()
	if s.DefaultAction != specs.ActErrno || s.DefaultErrnoRet == nil || *s.DefaultErrnoRet != errnoEPERM {
		t.Fatalf("default action %v errno %v, want EPERM for every call not allowed", s.DefaultAction, s.DefaultErrnoRet)
	}
}

// TestDefaultSeccompLeavesOutTheKernelsAttackSurface: none of these calls
// is allowed, under any argument.
func TestDefaultSeccompLeavesOutTheKernelsAttackSurface(t *testing.T) {
	denied := []string{
		"unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot",
		"fsopen", "fsmount", "fsconfig", "move_mount", "open_tree", "mount_setattr",
		"keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
		"io_uring_setup", "io_uring_enter", "io_uring_register",
		"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
		"ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
		"reboot", "swapon", "swapoff", "acct", "quotactl", "settimeofday", "clock_settime",
		"open_by_handle_at", "lookup_dcookie", "iopl", "ioperm", "syslog", "vhangup",
	}
	for _, rule := range DefaultSeccomp().Syscalls {
		if rule.Action != specs.ActAllow {
			continue
		}
		for _, name := range rule.Names {
			if slices.Contains(denied, name) {
				t.Errorf("%s is allowed (%+v)", name, rule.Args)
			}
		}
	}
}

// TestDefaultSeccompFiltersArguments: the calls allowed only with some
// arguments carry exactly those conditions.
func TestDefaultSeccompFiltersArguments(t *testing.T) {
	conditional := map[string][][]specs.LinuxSeccompArg{}
	for _, rule := range DefaultSeccomp().Syscalls {
		for _, name := range rule.Names {
			switch name {
			case "clone", "clone3", "socket", "prlimit64":
				if rule.Action == specs.ActAllow && len(rule.Args) == 0 {
					t.Errorf("%s allowed without conditions", name)
				}
				conditional[name] = append(conditional[name], rule.Args)
			case "personality":
				conditional[name] = append(conditional[name], rule.Args)
			}
		}
	}
	want := map[string][][]specs.LinuxSeccompArg{
		"clone":     {{{Index: 0, Value: cloneNewAny, Op: specs.OpMaskedEqual}}},
		"clone3":    {nil}, // ENOSYS
		"socket":    {{{Index: 0, Value: afVSOCK, Op: specs.OpNotEqual}}},
		"prlimit64": {{{Index: 0, Value: 0, Op: specs.OpEqualTo}}},
		"personality": {
			{{Index: 0, Value: 0, Op: specs.OpEqualTo}}, {{Index: 0, Value: 8, Op: specs.OpEqualTo}},
			{{Index: 0, Value: 0x20000, Op: specs.OpEqualTo}}, {{Index: 0, Value: 0x20008, Op: specs.OpEqualTo}},
			{{Index: 0, Value: 0xffffffff, Op: specs.OpEqualTo}},
		},
	}
	if diff := cmp.Diff(want, conditional); diff != "" {
		t.Errorf("argument filters (-want +got):\n%s", diff)
	}
	if cloneNewAny&0x10000000 == 0 {
		t.Error("CLONE_NEWUSER is not among the flags clone may not carry")
	}
}

func TestDefaultSeccompIsFresh(t *testing.T) {
	a := DefaultSeccomp()
	a.Syscalls[0].Names[0] = "changed"
	if DefaultSeccomp().Syscalls[0].Names[0] == "changed" {
		t.Error("profiles share their lists")
	}
}

func TestBuildSpecHasSeccomp(t *testing.T) {
	s, err := buildSpec(testWorker(), testInputs())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(DefaultSeccomp(), s.Linux.Seccomp); diff != "" {
		t.Errorf("seccomp (-want +got):\n%s", diff)
	}
}

func TestSplitUsers(t *testing.T) {
	in := testInputs()
	in.agentUID, in.agentGID = 1400, 1401
	s, err := buildSpec(testWorker(), in)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Process
	if p.User.UID != 0 || p.User.GID != 0 || !p.NoNewPrivileges {
		t.Errorf("user %+v, no_new_privs %v: want uid 0, to start the runner as another user", p.User, p.NoNewPrivileges)
	}
	two := []string{"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"}
	want := &specs.LinuxCapabilities{Bounding: two, Effective: two, Permitted: two, Inheritable: []string{}, Ambient: []string{}}
	if diff := cmp.Diff(want, p.Capabilities); diff != "" {
		t.Errorf("capabilities (-want +got):\n%s", diff)
	}
	wantArgs := []string{"/opt/atoll/bin/atoll", "worker", "--runner-user", "1500:1500", "--agent-user", "1400:1401"}
	if diff := cmp.Diff(wantArgs, p.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	// The user's code owns its home, not the agent.
	if m, _ := mountByDest(s, homeDir); !slices.Contains(m.Options, "uid=1500") {
		t.Errorf("home mount %+v, want it owned by the runner", m)
	}
}

// TestDefaultSeccompNativeArchitectureOnly: no 32-bit (compat) system
// calls; the runtime compiles one filter, not three.
func TestDefaultSeccompNativeArchitectureOnly(t *testing.T) {
	want := map[string][]specs.Arch{"amd64": {specs.ArchX86_64}, "arm64": {specs.ArchAARCH64}}[runtime.GOARCH]
	if got := DefaultSeccomp().Architectures; !slices.Equal(got, want) {
		t.Errorf("architectures = %v, want %v", got, want)
	}
}
