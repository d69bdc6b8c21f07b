package storage

import (
	"fmt"
	"io/fs"
	"path"
)

// Kind is what an Entry is.
type Kind int

const (
	KindFile Kind = iota + 1
	KindDir
	KindSymlink
)

func (k Kind) String() string {
	switch k {
	case KindFile:
		return "file"
	case KindDir:
		return "directory"
	case KindSymlink:
		return "symlink"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Entry is one file, directory or symlink of the tree being synced.
type Entry struct {
	// Path is relative to the synced directory, "/"-separated and clean.
	Path string
	Kind Kind
	// Size is a file's length in bytes.
	Size int64
	// Mode holds the permission bits; others are ignored. Directories
	// always keep owner rwx, so that later syncs can write into them.
	Mode fs.FileMode
	// LinkTarget is a symlink's target, relative and inside the tree.
	LinkTarget string
}

// perm is the mode an entry gets on disk.
func (e Entry) perm() fs.FileMode {
	if e.Kind == KindDir {
		return e.Mode&fs.ModePerm | 0o700
	}
	return e.Mode & fs.ModePerm
}

// checkManifest validates entries on their own, before anything on disk is
// looked at: paths, kinds, sizes, link targets, no duplicates, and every
// parent an entry of kind KindDir (so no entry lies beneath a file or a
// link of the same sync).
func checkManifest(entries []Entry) error {
	kinds := make(map[string]Kind, len(entries))
	for _, e := range entries {
		if err := checkEntryPath(e.Path); err != nil {
			return err
		}
		switch e.Kind {
		case KindFile:
			if e.Size < 0 {
				return fmt.Errorf("%w: file %q has a negative size", ErrInvalidManifest, e.Path)
			}
		case KindDir:
		case KindSymlink:
			if err := checkLinkTarget(e.Path, e.LinkTarget); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: entry %q has no kind", ErrInvalidManifest, e.Path)
		}
		if e.Kind != KindSymlink && e.LinkTarget != "" {
			return fmt.Errorf("%w: %s %q has a link target", ErrInvalidManifest, e.Kind, e.Path)
		}
		if _, dup := kinds[e.Path]; dup {
			return fmt.Errorf("%w: %q appears twice", ErrInvalidManifest, e.Path)
		}
		kinds[e.Path] = e.Kind
	}
	for _, e := range entries {
		parent := path.Dir(e.Path)
		if parent == "." {
			continue
		}
		switch k, ok := kinds[parent]; {
		case !ok:
			return fmt.Errorf("%w: the parent directory of %q is not in the manifest", ErrInvalidManifest, e.Path)
		case k != KindDir:
			return fmt.Errorf("%w: %q lies beneath %s %q", ErrInvalidManifest, e.Path, k, parent)
		}
	}
	return nil
}
