package envbuild

import "testing"

func TestProgress(t *testing.T) {
	var p Progress
	lines := []struct {
		name  string
		line  string
		moved bool
		want  Progress
	}{
		{"venv step", "Using CPython 3.11.7", false, Progress{}},
		{"resolved", "Resolved 3 packages in 342ms", true, Progress{Resolved: 3}},
		{"prepared one", "Prepared 1 package in 76ms", true, Progress{Resolved: 3, Downloaded: 1}},
		{"installed", "Installed 3 packages in 3ms", true, Progress{Resolved: 3, Downloaded: 1, Installed: 3}},
		{"package line", " + six==1.17.0", false, Progress{Resolved: 3, Downloaded: 1, Installed: 3}},
		{"second install adds up", "Resolved 1 package in 1ms", true, Progress{Resolved: 4, Downloaded: 1, Installed: 3}},
		{"a package named like a step", " + Installed==1.0", false, Progress{Resolved: 4, Downloaded: 1, Installed: 3}},
	}
	for _, tt := range lines {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Update(tt.line); got != tt.moved {
				t.Errorf("Update(%q) = %v, want %v", tt.line, got, tt.moved)
			}
			if p != tt.want {
				t.Errorf("after %q: %+v, want %+v", tt.line, p, tt.want)
			}
		})
	}
	if got, want := p.String(), "building environment: 4 resolved, 1 downloaded, 3 installed"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
