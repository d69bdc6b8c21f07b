package sandbox

import (
	"runtime"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Linux ABI values the profile filters on; spelled out so that the
// profile can be generated (and tested) on any host.
const (
	errnoEPERM  = 1
	errnoENOSYS = 38
	afVSOCK     = 40

	cloneNewNS     = 0x00020000
	cloneNewCgroup = 0x02000000
	cloneNewUTS    = 0x04000000
	cloneNewIPC    = 0x08000000
	cloneNewUser   = 0x10000000
	cloneNewPID    = 0x20000000
	cloneNewNet    = 0x40000000
	cloneNewAny    = cloneNewNS | cloneNewCgroup | cloneNewUTS | cloneNewIPC | cloneNewUser | cloneNewPID | cloneNewNet
)

// DefaultSeccomp is the system-call filter of every worker, and of
// anything else atoll runs on a user's behalf (package builds): an allow
// list, with every other call failing with EPERM. It has the semantics of
// the container default that Docker and containerd ship for a process
// without capabilities (moby's profiles/seccomp/default.json, the calls it
// allows unconditionally), and denies a little more:
//
//   - no namespaces: unshare and setns are absent and clone may not ask
//     for a new namespace, so there are no user namespaces inside a worker
//     (the kernel's largest attack surface, reached through unprivileged
//     user namespaces) and no mount or network namespaces either; clone3,
//     whose flags live in memory a filter cannot read, fails with ENOSYS,
//     which makes the C library fall back to clone;
//   - no mount, umount, pivot_root, chroot or the new mount API;
//   - no keyctl, add_key, request_key (the kernel keyring is not
//     namespaced), no bpf, perf_event_open, userfaultfd or io_uring;
//   - no kexec, init_module, finit_module, delete_module, reboot, swapon,
//     acct, quotactl, settimeofday or clock_settime;
//   - no ptrace, process_vm_readv or process_vm_writev (Docker allows them
//     on kernels from 4.8): a worker's code has no business reading another
//     process's memory, its agent's included;
//   - personality only with the values Docker allows (no turning address
//     space randomization off), no AF_VSOCK sockets, and prlimit64 only on
//     the caller itself (pid 0), so that user code cannot lower the limits
//     of the agent that supervises it;
//   - the native architecture's system calls only: a 32-bit call (int 0x80
//     on amd64, AArch32 on arm64), the kernel's compat entry with a history
//     of flaws of its own, kills the thread making it (the filter's action
//     for another architecture). Workers run 64-bit code. Each architecture
//     listed is a filter of its own that the runtime compiles at every
//     container start: i386's cost about 20 ms of each cold start.
//
// Each call returns a fresh profile: callers may append to it.
func DefaultSeccomp() *specs.LinuxSeccomp {
	eperm, enosys := uint(errnoEPERM), uint(errnoENOSYS)
	allow := func(names ...string) specs.LinuxSyscall {
		return specs.LinuxSyscall{Names: names, Action: specs.ActAllow}
	}
	argIs := func(name string, index uint, op specs.LinuxSeccompOperator, value uint64) specs.LinuxSyscall {
		s := allow(name)
		s.Args = []specs.LinuxSeccompArg{{Index: index, Value: value, Op: op}}
		return s
	}
	syscalls := []specs.LinuxSyscall{
		allow(slices.Clone(allowedSyscalls)...),
		argIs("socket", 0, specs.OpNotEqual, afVSOCK),
		argIs("prlimit64", 0, specs.OpEqualTo, 0),
		// The flags a clone may carry: none of the CLONE_NEW* bits. (s390
		// swaps clone's first two arguments; atoll runs on amd64 and arm64.)
		{
			Names:  []string{"clone"},
			Action: specs.ActAllow,
			Args:   []specs.LinuxSeccompArg{{Index: 0, Value: cloneNewAny, ValueTwo: 0, Op: specs.OpMaskedEqual}},
		},
		{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys},
	}
	// personality: Linux's own (0), with UNAME26 (0x0020000), 32-bit
	// (PER_LINUX32, 0x0008) or both, and the query (0xffffffff).
	for _, v := range []uint64{0x0, 0x0008, 0x20000, 0x20008, 0xffffffff} {
		syscalls = append(syscalls, argIs("personality", 0, specs.OpEqualTo, v))
	}
	arches := []specs.Arch(nil)
	switch runtime.GOARCH {
	case "amd64":
		arches = []specs.Arch{specs.ArchX86_64}
		syscalls = append(syscalls, allow("arch_prctl", "modify_ldt"))
	case "arm64":
		arches = []specs.Arch{specs.ArchAARCH64}
		// Names AArch64 lacks are skipped by the runtime.
		syscalls = append(syscalls, allow("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2",
			"breakpoint", "cacheflush", "set_tls"))
	}
	return &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: &eperm,
		Architectures:   arches,
		Syscalls:        syscalls,
	}
}

// allowedSyscalls are the calls any process may make: moby's default
// profile's unconditional list (calls unknown to a kernel or an
// architecture are skipped by the runtime), without ptrace and its
// relatives and with prlimit64, socket, clone and personality allowed
// only with the arguments above.
var allowedSyscalls = []string{
	"accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat",
	"capget", "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime",
	"clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime",
	"clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close",
	"close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3",
	"epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
	"epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
	"execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2",
	"fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod",
	"fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64",
	"fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr",
	"fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync",
	"ftruncate", "ftruncate64", "futex", "futex_requeue", "futex_time64",
	"futex_wait", "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd",
	"getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32",
	"getgid", "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername",
	"getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom",
	"getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit",
	"get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt",
	"get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr",
	"inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
	"io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
	"io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit",
	"ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
	"landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat",
	"listen", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek",
	"lsetxattr", "lstat", "lstat64", "madvise", "map_shadow_stack", "membarrier",
	"memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mknod",
	"mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect",
	"mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
	"mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
	"mremap", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
	"munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat",
	"_newselect", "open", "openat", "openat2", "pause", "pidfd_open",
	"pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free",
	"pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv",
	"preadv2", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64",
	"pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
	"recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg",
	"remap_file_pages", "removexattr", "rename", "renameat", "renameat2",
	"restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
	"rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
	"rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
	"sched_getaffinity", "sched_getattr", "sched_getparam",
	"sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
	"sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
	"sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
	"seccomp", "select", "semctl", "semget", "semop", "semtimedop",
	"semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg",
	"sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid",
	"setgid32", "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority",
	"setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
	"setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list",
	"setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid",
	"setuid32", "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
	"sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn",
	"socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64",
	"statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs",
	"sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
	"timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime",
	"timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
	"timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
	"truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime",
	"utimensat", "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4",
	"waitid", "waitpid", "write", "writev",
}

// seccompForGVisor adapts the profile to runsc, which applies it inside
// its own kernel: gVisor (as Debian ships it) ignores a rule's own errno
// and fails clone3 with EPERM, which the C library takes for a failure
// rather than a reason to fall back to clone, so that no thread starts.
// Allowed, clone3 reaches gVisor's kernel, which does not implement it
// and answers ENOSYS itself; namespaces made through it would be gVisor's
// own, never the host kernel's.
func seccompForGVisor(s *specs.LinuxSeccomp) {
	for i, rule := range s.Syscalls {
		if slices.Equal(rule.Names, []string{"clone3"}) {
			s.Syscalls[i] = specs.LinuxSyscall{Names: rule.Names, Action: specs.ActAllow}
		}
	}
}
