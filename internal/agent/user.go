package agent

import (
	"fmt"
	"strconv"
	"strings"
)

// User is a numeric user and group.
type User struct {
	UID, GID uint32
}

// ParseUser reads "UID:GID", as the sandbox passes it on the command line.
func ParseUser(s string) (User, error) {
	u, g, ok := strings.Cut(s, ":")
	if !ok {
		return User{}, fmt.Errorf("user %q: want UID:GID", s)
	}
	uid, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return User{}, fmt.Errorf("user %q: uid: %w", s, err)
	}
	gid, err := strconv.ParseUint(g, 10, 32)
	if err != nil {
		return User{}, fmt.Errorf("user %q: gid: %w", s, err)
	}
	if uid == 0 || gid == 0 {
		return User{}, fmt.Errorf("user %q: the runner and the agent never run as root", s)
	}
	return User{UID: uint32(uid), GID: uint32(gid)}, nil
}
