package sandbox

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/atoll-dev/atoll/internal/sandbox/cgroups"
)

func TestDetect(t *testing.T) {
	installed := func(names ...string) func(string) (string, error) {
		return func(n string) (string, error) {
			for _, i := range names {
				if i == n {
					return "/usr/bin/" + n, nil
				}
			}
			return "", exec.ErrNotFound
		}
	}
	v1 := func() (cgroups.Layout, error) { return cgroups.Layout{}, nil }
	hybrid := func() (cgroups.Layout, error) { return cgroups.Layout{Hybrid: true}, nil }
	noCgroups := func() (cgroups.Layout, error) {
		return cgroups.Layout{}, errors.New("no cgroup memory controller is mounted")
	}
	tests := []struct {
		name     string
		force    string
		probe    hostProbe
		wantKind string
		warning  string // substring; "" means no warning
	}{
		{"root with runc", "", hostProbe{"linux", 0, installed("runc", "crun"), v1}, KindRunc, ""},
		{"only crun", "auto", hostProbe{"linux", 0, installed("crun"), v1}, KindCrun, ""},
		{"only crun on a hybrid host", "", hostProbe{"linux", 0, installed("crun"), hybrid}, KindProcess, "crun does not support"},
		{"nothing installed", "", hostProbe{"linux", 0, installed(), v1}, KindProcess, "runc is not installed"},
		{"not root", "", hostProbe{"linux", 1000, installed("runc"), v1}, KindProcess, "not running as root"},
		{"macOS", "", hostProbe{"darwin", 501, installed(), v1}, KindProcess, "need Linux"},
		{"no cgroups", "", hostProbe{"linux", 0, installed("runc"), noCgroups}, KindProcess, "no cgroup memory controller"},
		{"forced process", "process", hostProbe{"linux", 0, installed("runc"), v1}, KindProcess, "NOT isolated"},
		{"forced runsc", "runsc", hostProbe{"linux", 0, installed("runc", "runsc"), v1}, KindRunsc, ""},
		{"forced runsc, missing", "runsc", hostProbe{"linux", 0, installed("runc"), v1}, KindRunsc, "will not work: runsc is not installed"},
		{"forced runc, not root", "runc", hostProbe{"linux", 1000, installed("runc"), v1}, KindRunc, "will not work"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, warning, err := detect(tt.force, tt.probe)
			if err != nil {
				t.Fatal(err)
			}
			if kind != tt.wantKind {
				t.Errorf("kind = %q, want %q", kind, tt.wantKind)
			}
			if (tt.warning == "") != (warning == "") || !strings.Contains(warning, tt.warning) {
				t.Errorf("warning = %q, want one containing %q", warning, tt.warning)
			}
			if kind == KindProcess && !strings.Contains(warning, "NOT isolated") {
				t.Errorf("process fallback without the weak-isolation warning: %q", warning)
			}
		})
	}
	if _, _, err := detect("docker", hostProbe{}); err == nil {
		t.Error("unknown sandbox accepted")
	}
}

func TestDetectThisHost(t *testing.T) {
	kind, warning, err := Detect("")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("this host: %s %s", kind, warning)
}
