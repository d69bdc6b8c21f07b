package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// Ways an account's /data is kept (--data-volumes).
const (
	// VolumesAuto uses VolumesLoop where the host allows it, else
	// VolumesDirectory with a warning.
	VolumesAuto = "auto"
	// VolumesLoop keeps each account's /data in an ext4 filesystem image of
	// its own, mounted through a loop device: the quota is the size of the
	// filesystem, so it binds every write (workers' included) with ENOSPC.
	VolumesLoop = "loop"
	// VolumesDirectory keeps each account's /data as a plain directory: the
	// quota binds sync_dir only.
	VolumesDirectory = "directory"
)

// volumesDir holds the loop volumes' images, under the data directory.
const volumesDir = "volumes"

// imageBytes is the size of the filesystem image that gives an account
// its quota: ext4's own metadata (inode tables, bitmaps and, in larger
// images, a journal) take about 2-4% of it, so the quota plus a sixteenth
// and a MiB leaves at least the quota free.
func imageBytes(quota int64) int64 { return quota + quota/16 + 1<<20 }

// journalMinBytes is the smallest quota whose image gets a journal: below
// it the journal would take a large part of the quota.
const journalMinBytes = 64 << 20

// LoopVolumes mounts each account's filesystem image on its directory,
// <data-dir>/data/<account>, the first time the account's /data is used.
// The images live in <data-dir>/volumes and survive restarts; a larger
// quota grows them when they are next mounted (a smaller one cannot shrink
// them: sync_dir still holds the account to it).
type LoopVolumes struct {
	dataDir string
	quota   int64
	owner   *Owner
	log     *slog.Logger

	mu      sync.Mutex
	mounted map[string]bool // accounts whose image this process mounted
}

// Image is where account's filesystem image is kept.
func (v *LoopVolumes) Image(account string) string {
	return filepath.Join(v.dataDir, volumesDir, account+".ext4")
}

// Ensure makes sure account's image exists, is as large as the quota
// needs, and is mounted on its directory.
func (v *LoopVolumes) Ensure(account string) error {
	if err := validAccount(account); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mounted[account] {
		return nil
	}
	dir, err := AccountDir(v.dataDir, account)
	if err != nil {
		return err
	}
	if mounted, err := isMountPoint(dir); err != nil {
		return fmt.Errorf("storage: %w", err)
	} else if mounted {
		v.mounted[account] = true // by an earlier run that did not unmount
		return nil
	}
	if err := v.prepareImage(account); err != nil {
		return fmt.Errorf("storage: volume of account %q: %w", account, err)
	}
	if err := mountImage(v.Image(account), dir); err != nil {
		return fmt.Errorf("storage: mount the volume of account %q: %w", account, err)
	}
	v.mounted[account] = true
	// mkfs makes lost+found; /data should hold only what the account put
	// there (fsck makes it again if it ever needs it).
	_ = os.Remove(filepath.Join(dir, "lost+found"))
	if v.owner != nil {
		if err := os.Lchown(dir, v.owner.UID, v.owner.GID); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
	}
	v.log.Debug("mounted volume", "account", account, "image", v.Image(account))
	return nil
}

// prepareImage makes the account's image, or grows it to the quota.
func (v *LoopVolumes) prepareImage(account string) error {
	if err := os.MkdirAll(filepath.Join(v.dataDir, volumesDir), 0o700); err != nil {
		return err
	}
	image := v.Image(account)
	want := imageBytes(v.quota)
	fi, err := os.Stat(image)
	switch {
	case os.IsNotExist(err):
		// Made under another name and renamed into place once it holds
		// what the directory held: whole or not at all.
		tmp := image + ".new"
		if err := makeImage(tmp, want, v.quota >= journalMinBytes, v.owner); err != nil {
			os.Remove(tmp)
			return err
		}
		if err := v.migrate(account, tmp); err != nil {
			os.Remove(tmp)
			return err
		}
		return os.Rename(tmp, image)
	case err != nil:
		return err
	case fi.Size() < want:
		v.log.Info("growing volume to the quota", "account", account, "from_bytes", fi.Size(), "to_bytes", want)
		return growImage(image, want)
	}
	return nil
}

// migrate copies what the account's directory holds (it was a plain
// directory before: an earlier server's, or --data-volumes directory)
// into its new image, then empties the directory, which the image will
// be mounted on.
func (v *LoopVolumes) migrate(account, image string) error {
	dir := filepath.Join(v.dataDir, "data", account)
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		return err
	}
	mnt := filepath.Join(v.dataDir, volumesDir, "."+account+".migrate")
	if err := os.Mkdir(mnt, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	defer os.Remove(mnt)
	if err := mountImage(image, mnt); err != nil {
		return err
	}
	copyErr := copyTree(dir, mnt)
	if err := unmountVolume(mnt); err != nil {
		return errors.Join(copyErr, err)
	}
	if copyErr != nil {
		return fmt.Errorf("move the %d entries of %s into its volume (does it fit the quota of %d bytes?): %w", len(entries), dir, v.quota, copyErr)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	v.log.Info("moved the account's /data into its volume", "account", account, "entries", len(entries))
	return nil
}

// Close unmounts the volumes this process mounted. A volume still in use
// (a worker that has not exited) is detached and unmounted once it is not.
func (v *LoopVolumes) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	var first error
	for account := range v.mounted {
		if err := unmountVolume(filepath.Join(v.dataDir, "data", account)); err != nil && first == nil {
			first = fmt.Errorf("storage: unmount the volume of account %q: %w", account, err)
		}
		delete(v.mounted, account)
	}
	return first
}

// writeError describes a failed write of a synced file: a full volume
// (the quota, as the filesystem's size, reached) is ErrQuotaExceeded, as
// the check before the upload would have said had the account's functions
// not written in the meantime.
func writeError(path string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: the account's /data volume is full while writing %s; "+
			"remove data you no longer need (atoll data rm) or ask for a larger quota", ErrQuotaExceeded, path)
	}
	return fmt.Errorf("storage: write %s: %w", path, err)
}

// mountIfUnmounted mounts account's loop volume, if it has one that no
// server has mounted, for a Volume opened on the server host; the returned
// function unmounts it again (nil when there was nothing to mount).
func mountIfUnmounted(dataDir, account string) (func() error, error) {
	image := filepath.Join(dataDir, volumesDir, account+".ext4")
	if _, err := os.Stat(image); err != nil {
		return nil, nil // a directory volume, or none
	}
	dir := filepath.Join(dataDir, "data", account)
	if mounted, err := isMountPoint(dir); err != nil || mounted {
		return nil, nil // mounted by the running server (or OpenRoot will say why not)
	}
	if err := mountImage(image, dir); err != nil {
		return nil, fmt.Errorf("account %q keeps /data in %s, which is not mounted and could not be (run as root, or start the server): %w",
			account, image, err)
	}
	return func() error { return unmountVolume(dir) }, nil
}
