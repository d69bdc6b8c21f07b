package sandbox

import (
	"debug/buildinfo"
	"os"
	"path/filepath"
	"runtime/debug"
)

// AgentBinaryName is the slim agent binary (cmd/atoll-agent) the server
// looks for beside its own.
const AgentBinaryName = "atoll-agent"

// AgentBinary returns the binary workers run as their agent: the slim
// atoll-agent beside serverExe when it is from the same build, else
// serverExe itself (which serves `worker` too). The slim one starts faster
// and stays smaller in every worker. "The same build" is checked, not
// assumed, since an agent that speaks another version of the worker
// protocol fails every call: the same main module and version control
// revision, a tree as modified or not, and a binary no older than the
// server's (a stale one left by an earlier build is passed over).
func AgentBinary(serverExe string) string {
	slim := filepath.Join(filepath.Dir(serverExe), AgentBinaryName)
	fi, err := os.Stat(slim)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return serverExe
	}
	server, err := os.Stat(serverExe)
	if err != nil || fi.ModTime().Before(server.ModTime()) {
		return serverExe
	}
	own, ok := debug.ReadBuildInfo()
	if !ok {
		return serverExe
	}
	theirs, err := buildinfo.ReadFile(slim)
	if err != nil || !sameBuild(own, theirs) {
		return serverExe
	}
	return slim
}

// sameBuild reports whether two binaries were built from the same module
// at the same revision.
func sameBuild(a, b *debug.BuildInfo) bool {
	if a.Main.Path != b.Main.Path || a.Main.Version != b.Main.Version || a.GoVersion != b.GoVersion {
		return false
	}
	for _, key := range []string{"vcs.revision", "vcs.modified"} {
		if setting(a, key) != setting(b, key) {
			return false
		}
	}
	return true
}

func setting(info *debug.BuildInfo, key string) string {
	for _, s := range info.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}
