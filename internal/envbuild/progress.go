package envbuild

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// uvSummary matches the summary lines uv prints after each step of an
// install ("Resolved 3 packages in 12ms", "Prepared 1 package in 5ms",
// "Installed 3 packages in 2ms"), whatever the terminal.
var uvSummary = regexp.MustCompile(`^(Resolved|Prepared|Installed) (\d+) packages? in `)

// Progress follows an environment build through uv's output: how many
// packages were resolved, downloaded (uv: prepared) and installed, summed
// over the build's installs. The zero value is a build that has printed
// nothing yet. It is not safe for concurrent use.
type Progress struct {
	Resolved, Downloaded, Installed int
}

// Update takes one line of build output and reports whether it moved the
// progress on.
func (p *Progress) Update(line string) bool {
	m := uvSummary.FindStringSubmatch(strings.TrimSpace(line))
	if m == nil {
		return false
	}
	n, err := strconv.Atoi(m[2])
	if err != nil {
		return false
	}
	switch m[1] {
	case "Resolved":
		p.Resolved += n
	case "Prepared":
		p.Downloaded += n
	case "Installed":
		p.Installed += n
	}
	return true
}

// String is the progress as a caller reads it.
func (p Progress) String() string {
	return fmt.Sprintf("building environment: %d resolved, %d downloaded, %d installed", p.Resolved, p.Downloaded, p.Installed)
}
