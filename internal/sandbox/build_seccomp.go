package sandbox

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Linux's ABI, whatever this binary is built for: the profile is a
// container's, written on any host.
const (
	linuxEPERM        = 1
	linuxENOSYS       = 38
	linuxCloneNewNS   = 0x00020000
	linuxCloneNewCgrp = 0x02000000
	linuxCloneNewUTS  = 0x04000000
	linuxCloneNewIPC  = 0x08000000
	linuxCloneNewUser = 0x10000000
	linuxCloneNewPID  = 0x20000000
	linuxCloneNewNet  = 0x40000000
)

// buildSeccompProfile is the seccomp filter of build containers, the one
// place it is chosen. It denies what a package's build code has no use
// for and what the kernel's largest attack surface sits behind: new
// namespaces (user namespaces above all), mounts, keyrings, BPF, perf,
// io_uring, kexec, modules, and tracing or reading other processes. It is
// a deny list over an allow default, meant to give way to the project's
// shared default profile (the container default's semantics) once there
// is one.
func buildSeccompProfile() *specs.LinuxSeccomp {
	deny := []string{
		"unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot",
		"fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount", "mount_setattr",
		"keyctl", "add_key", "request_key",
		"bpf", "perf_event_open", "userfaultfd",
		"io_uring_setup", "io_uring_enter", "io_uring_register",
		"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
		"ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
		"open_by_handle_at", "name_to_handle_at",
		"swapon", "swapoff", "reboot", "acct", "quotactl", "lookup_dcookie",
	}
	eperm := uint(linuxEPERM)
	enosys := uint(linuxENOSYS)
	sc := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32, specs.ArchAARCH64, specs.ArchARM},
		Syscalls: []specs.LinuxSyscall{
			{Names: deny, Action: specs.ActErrno, ErrnoRet: &eperm},
			// clone3 passes its flags in memory, out of a filter's reach:
			// ENOSYS makes the C library fall back to clone, whose flags
			// are checked below.
			{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys},
		},
	}
	for _, flag := range []uint64{
		linuxCloneNewUser, linuxCloneNewNS, linuxCloneNewNet, linuxCloneNewPID,
		linuxCloneNewIPC, linuxCloneNewUTS, linuxCloneNewCgrp,
	} {
		sc.Syscalls = append(sc.Syscalls, specs.LinuxSyscall{
			Names: []string{"clone"}, Action: specs.ActErrno, ErrnoRet: &eperm,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: flag, ValueTwo: flag, Op: specs.OpMaskedEqual}},
		})
	}
	return sc
}
