package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

// Mount is where workers see their account's directory.
const Mount = "/data"

// stagingDir, at the top of an account directory, holds uploads in flight;
// it is on the same filesystem as their destinations, so that a finished
// file is renamed into place, never copied.
const stagingDir = ".atoll-staging"

// AccountDir returns the persistent directory of account under the server's
// data directory, <dataDir>/data/<account>, creating it (mode 0700) if
// needed. Launchers mount it at /data in the account's workers.
func AccountDir(dataDir, account string, opts ...DirOption) (string, error) {
	var o dirOptions
	for _, opt := range opts {
		opt(&o)
	}
	if err := validAccount(account); err != nil {
		return "", err
	}
	if !filepath.IsAbs(dataDir) {
		return "", fmt.Errorf("storage: data directory %q is not absolute", dataDir)
	}
	volumes := filepath.Join(dataDir, "data")
	if err := os.MkdirAll(volumes, 0o700); err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	dir := filepath.Join(volumes, account)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("storage: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("storage: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("storage: %s is not a directory", dir)
	}
	if o.owner != nil {
		if err := os.Lchown(dir, o.owner.UID, o.owner.GID); err != nil {
			return "", fmt.Errorf("storage: %w", err)
		}
	}
	return dir, nil
}

// Owner is a uid and gid.
type Owner struct{ UID, GID int }

// DirOption configures AccountDir.
type DirOption func(*dirOptions)

type dirOptions struct{ owner *Owner }

// WithOwner gives the account directory to uid and gid: the user sandboxed
// workers run as, so that they can write /data. (What a sync writes into it
// gets the owner of Options.Owner.)
func WithOwner(uid, gid int) DirOption {
	return func(o *dirOptions) { o.owner = &Owner{UID: uid, GID: gid} }
}

// validAccount accepts names that are one harmless path component. The
// accounts package is stricter; this is the storage's own line of defence.
func validAccount(account string) error {
	if account == "" || len(account) > 255 || strings.ContainsAny(account, "/\\\x00") ||
		strings.HasPrefix(account, ".") || !filepath.IsLocal(account) {
		return fmt.Errorf("%w %q", ErrInvalidAccount, account)
	}
	return nil
}

// RemoteRel turns a path as workers see it ("/data/models") into a path
// relative to the account directory ("models"; "." for /data itself).
func RemoteRel(remote string) (string, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: remote directory %q %s", ErrInvalidPath, remote, why)
	}
	switch {
	case !utf8.ValidString(remote) || strings.ContainsRune(remote, 0):
		return "", bad("is not valid UTF-8 text")
	case !strings.HasPrefix(remote, "/"):
		return "", bad("must be absolute and under /data, such as /data/my_dir")
	case slices.Contains(strings.Split(remote, "/"), ".."):
		return "", bad(`must not contain ".."`)
	}
	clean := path.Clean(remote)
	if clean == Mount {
		return ".", nil
	}
	rel, ok := strings.CutPrefix(clean, Mount+"/")
	if !ok {
		return "", bad("must be under /data, such as /data/my_dir")
	}
	if first, _, _ := strings.Cut(rel, "/"); first == stagingDir {
		return "", bad("is reserved for atoll's own use")
	}
	return rel, nil
}

// RemotePath is the inverse of RemoteRel: how workers see rel.
func RemotePath(rel string) string {
	if rel == "." || rel == "" {
		return Mount
	}
	return Mount + "/" + rel
}

// checkEntryPath accepts a clean, relative, "/"-separated path with no
// "." or ".." components.
func checkEntryPath(p string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: %q %s", ErrInvalidPath, p, why)
	}
	switch {
	case p == "" || p == ".":
		return bad("is empty")
	case !utf8.ValidString(p) || strings.ContainsRune(p, 0):
		return bad("is not valid UTF-8 text")
	case strings.HasPrefix(p, "/"):
		return bad("is absolute; entries must be relative to the synced directory")
	case slices.Contains(strings.Split(p, "/"), ".."):
		return bad(`contains ".."`)
	case path.Clean(p) != p || !filepath.IsLocal(filepath.FromSlash(p)):
		return bad("is not a clean relative path")
	}
	return nil
}

// checkLinkTarget accepts a symlink target that resolves inside the synced
// tree: relative, clean, and climbing with leading ".." no higher than the
// directory being synced. Past its leading ".." a clean path only descends,
// and every link it descends through is checked the same way, so no chain
// of links leaves the tree either.
func checkLinkTarget(entry, target string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: symlink %q -> %q %s", ErrInvalidPath, entry, target, why)
	}
	switch {
	case target == "":
		return bad("has an empty target")
	case !utf8.ValidString(target) || strings.ContainsRune(target, 0):
		return bad("has a target that is not valid UTF-8 text")
	case strings.HasPrefix(target, "/"):
		return bad("is absolute; only links inside the synced directory are kept, as relative links")
	case path.Clean(target) != target:
		return bad("has a target that is not a clean relative path")
	}
	ups := 0
	for _, c := range strings.Split(target, "/") {
		if c != ".." {
			break
		}
		ups++
	}
	depth := 0
	if dir := path.Dir(entry); dir != "." {
		depth = strings.Count(dir, "/") + 1
	}
	if ups > depth {
		return bad("points outside the synced directory")
	}
	return nil
}
