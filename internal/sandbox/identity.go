package sandbox

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// AgentID is the default user and group of a worker's agent: not the
// runner's (NobodyID), so that the user's code cannot reach the agent.
const AgentID = 65533

// splitUsers makes the agent and the runner two users. The kernel lets a
// process act on another of the same user in more ways than ptrace
// (signals, /proc/<pid>/fd, prlimit, sched_setscheduler, setpriority...):
// with the runner as in.uid and the agent as in.agentUID, user code can do
// none of them to its agent, whose protocol stream and supervision are
// what the server trusts.
//
// Only a privileged process can start another as a different user, so
// the container's process starts as uid 0 holding CAP_SETUID, CAP_SETGID
// and CAP_SETPCAP alone (every other capability is out of its bounding
// set; no_new_privs and the seccomp filter hold). The agent starts the
// runner from a thread with an empty bounding set, as in.uid, which clears
// the runner's capabilities as it leaves uid 0, then drops to in.agentUID
// itself, which clears its own on every thread, before it reads its first
// call (see agent.Options.RunnerUser). No user code runs while the agent
// is uid 0, and the runner can never regain a capability.
//
// With in.agentUID 0, the spec is left as it is: one unprivileged user
// without capabilities.
func splitUsers(s *specs.Spec, in specInputs) {
	if in.agentUID == 0 {
		return
	}
	caps := []string{"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"}
	s.Process.User = specs.User{UID: 0, GID: 0}
	s.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding: caps, Effective: caps, Permitted: caps,
		Inheritable: []string{}, Ambient: []string{},
	}
	s.Process.Args = append(s.Process.Args,
		"--runner-user", fmt.Sprintf("%d:%d", in.uid, in.gid),
		"--agent-user", fmt.Sprintf("%d:%d", in.agentUID, in.agentGID))
}
