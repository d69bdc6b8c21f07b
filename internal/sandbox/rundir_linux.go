package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// shmDir is the host's tmpfs for what lives in memory only.
const shmDir = "/dev/shm"

// memoryRunDir returns a directory in memory (a tmpfs) for what lives only
// as long as a launcher's containers: their bundles and the runtime's
// state. On disk, every container start made and every teardown removed
// some thirty files (the bundle, the mount points the runtime creates in
// its root file system, the runtime's state), about 15 ms of a cold start
// on ext4. The directory is named after stateDir, so a server that
// restarts after a crash finds what its predecessor left, and is the
// server user's alone: one another user made under that name first (the
// name is predictable) is refused, and the launcher keeps its state on
// disk. A reboot empties it, as it ends the containers.
func memoryRunDir(stateDir string) (string, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(shmDir, &fs); err != nil {
		return "", err
	}
	if fs.Type != unix.TMPFS_MAGIC {
		return "", fmt.Errorf("%s is not a tmpfs", shmDir)
	}
	sum := sha256.Sum256([]byte(stateDir))
	dir := filepath.Join(shmDir, "atoll-"+hex.EncodeToString(sum[:8]))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	// /dev/shm is sticky: once this is ours, no one else can replace it.
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != uint32(os.Geteuid()) || st.Mode&0o077 != 0 {
		return "", fmt.Errorf("%s is not a private directory of this user's", dir)
	}
	return dir, nil
}
