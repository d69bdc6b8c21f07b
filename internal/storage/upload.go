package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
)

// Upload receives the content of one planned sync and commits it. Write
// and EndFile take the files in the order given to BeginUpload; Commit
// makes them visible; Close ends the upload, removing whatever was staged
// and not committed. Close must always be called. An Upload is used by one
// goroutine.
type Upload struct {
	s     *Store
	acct  *accountState
	root  *os.Root
	p     *plan
	files []int
	stage string // staging directory, relative to the account directory

	next     int         // position in files of the next file to open
	cur      *stagedFile // the file being received
	staged   []stagedFile
	incoming int64 // bytes reserved against the quota
	received int64
	closed   bool
}

type stagedFile struct {
	entry   int
	tmp     string
	f       *os.File
	h       hash.Hash
	written int64
	sum     []byte
}

// Result describes a committed sync.
type Result struct {
	RemoteDir      string
	FilesWritten   int64
	BytesWritten   int64
	FilesUnchanged int64
}

// BeginUpload starts receiving the sync planned as syncID: files are the
// indexes of the file entries whose content follows, in order; every other
// file entry must be stored already with the same size (the client found
// its hash equal). It checks the quota, reserves the incoming bytes and
// creates the directories of the manifest.
func (s *Store) BeginUpload(ctx context.Context, account, syncID string, files []int) (*Upload, error) {
	s.mu.Lock()
	p := s.plans[syncID]
	if p != nil && p.account == account {
		delete(s.plans, syncID)
	} else {
		p = nil
	}
	s.mu.Unlock()
	if p == nil || s.now().Sub(p.created) > s.opts.PlanTTL {
		return nil, fmt.Errorf("%w %q; plan the sync again", ErrUnknownSync, syncID)
	}
	sent := make(map[int]bool, len(files))
	var incoming int64
	for _, i := range files {
		if i < 0 || i >= len(p.entries) || p.entries[i].Kind != KindFile {
			return nil, fmt.Errorf("%w: entry %d is not a file of the plan", ErrInvalidManifest, i)
		}
		if sent[i] {
			return nil, fmt.Errorf("%w: %q is sent twice", ErrInvalidManifest, p.entries[i].Path)
		}
		sent[i] = true
		incoming += p.entries[i].Size
	}
	for i, e := range p.entries {
		if e.Kind == KindFile && !sent[i] && p.stored[i] == nil {
			return nil, fmt.Errorf("%w: %q is neither sent nor stored", ErrInvalidManifest, e.Path)
		}
	}
	root, err := s.openAccount(account)
	if err != nil {
		return nil, err
	}
	if err := s.reserve(root, p, files, incoming); err != nil {
		root.Close()
		return nil, err
	}
	u := &Upload{
		s: s, acct: s.account(account), root: root, p: p, files: files,
		stage: path.Join(stagingDir, p.id), incoming: incoming,
	}
	if err := u.prepare(); err != nil {
		u.Close()
		return nil, err
	}
	return u, nil
}

// reserve checks that the account stays within its quota once the sync
// replaces the files it sends, counting the other uploads in flight, and
// reserves the incoming bytes. A sync that does not grow the account is
// never refused.
func (s *Store) reserve(root *os.Root, p *plan, files []int, incoming int64) error {
	used, err := usage(root)
	if err != nil {
		return fmt.Errorf("storage: measure usage: %w", err)
	}
	var replaced int64
	for _, i := range files {
		if fi, err := root.Lstat(path.Join(p.rel, p.entries[i].Path)); err == nil && fi.Mode().IsRegular() {
			replaced += fi.Size()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	quota := s.opts.QuotaBytes
	after := used - replaced + s.reserved[p.account]
	if quota >= 0 && incoming > replaced && after+incoming > quota {
		return &QuotaError{Account: p.account, Quota: quota, Used: after, Incoming: incoming}
	}
	s.reserved[p.account] += incoming
	return nil
}

// prepare creates the synced directory and the manifest's directories
// (replacing stored links by directories) and the staging directory.
func (u *Upload) prepare() error {
	if err := u.mkdirAll(u.p.rel); err != nil {
		return err
	}
	for _, i := range parentsFirst(u.p.entries) {
		e := u.p.entries[i]
		if e.Kind != KindDir {
			continue
		}
		full := path.Join(u.p.rel, e.Path)
		fi, err := u.root.Lstat(full)
		switch {
		case err == nil && fi.IsDir():
			continue
		case err == nil && fi.Mode()&fs.ModeSymlink != 0:
			if err := u.root.Remove(full); err != nil {
				return fmt.Errorf("storage: replace link %s: %w", RemotePath(full), err)
			}
		case err == nil:
			return checkReplace(e, full, fi)
		case !errors.Is(err, fs.ErrNotExist):
			return conflict(full, err)
		}
		if err := u.mkdir(full, 0o700); err != nil {
			return err
		}
	}
	u.acct.stage.Lock()
	defer u.acct.stage.Unlock()
	if err := u.root.MkdirAll(u.stage, 0o700); err != nil {
		return fmt.Errorf("storage: staging directory: %w", err)
	}
	return nil
}

// mkdirAll creates rel and its missing parents, given to the store's owner.
func (u *Upload) mkdirAll(rel string) error {
	if rel == "." {
		return nil
	}
	parts := strings.Split(rel, "/")
	for n := range parts {
		p := strings.Join(parts[:n+1], "/")
		fi, err := u.root.Stat(p)
		switch {
		case err == nil && fi.IsDir():
			continue
		case err == nil:
			return fmt.Errorf("%w: %s is a file, not a directory", ErrConflict, RemotePath(p))
		case !errors.Is(err, fs.ErrNotExist):
			return conflict(p, err)
		}
		if err := u.mkdir(p, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (u *Upload) mkdir(rel string, perm fs.FileMode) error {
	if err := u.root.Mkdir(rel, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return conflict(rel, err)
	}
	if o := u.s.opts.Owner; o != nil {
		if err := u.root.Lchown(rel, o.UID, o.GID); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
	}
	return nil
}

// open starts the next file, if none is being received.
func (u *Upload) open() error {
	if u.closed {
		return errors.New("storage: upload is closed")
	}
	if u.cur != nil {
		return nil
	}
	if u.next >= len(u.files) {
		return fmt.Errorf("%w: content after the last announced file", ErrInvalidManifest)
	}
	i := u.files[u.next]
	u.next++
	tmp := path.Join(u.stage, strconv.Itoa(i))
	f, err := u.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("storage: stage %s: %w", u.p.entries[i].Path, err)
	}
	u.cur = &stagedFile{entry: i, tmp: tmp, f: f, h: sha256.New()}
	return nil
}

// Write appends p to the file being received, starting the next file if
// none is.
func (u *Upload) Write(p []byte) (int, error) {
	if err := u.open(); err != nil {
		return 0, err
	}
	c := u.cur
	e := u.p.entries[c.entry]
	if c.written+int64(len(p)) > e.Size {
		return 0, fmt.Errorf("%w: %q is longer than the %d bytes announced; did it change while syncing?",
			ErrContentMismatch, e.Path, e.Size)
	}
	n, err := c.f.Write(p)
	c.h.Write(p[:n])
	c.written += int64(n)
	u.received += int64(n)
	if err != nil {
		return n, writeError(e.Path, err)
	}
	return n, nil
}

// EndFile ends the file being received (starting it, if it is empty):
// its length and SHA-256 must be as announced.
func (u *Upload) EndFile(sum []byte) error {
	if err := u.open(); err != nil {
		return err
	}
	c := u.cur
	e := u.p.entries[c.entry]
	if c.written != e.Size {
		return fmt.Errorf("%w: received %d of the %d bytes of %q; did it change while syncing?",
			ErrContentMismatch, c.written, e.Size, e.Path)
	}
	c.sum = c.h.Sum(nil)
	if !bytes.Equal(c.sum, sum) {
		return fmt.Errorf("%w: %q does not have the SHA-256 its sender computed; did it change while syncing?",
			ErrContentMismatch, e.Path)
	}
	if err := u.finish(c, e); err != nil {
		return err
	}
	u.staged = append(u.staged, *c)
	u.cur = nil
	return nil
}

func (u *Upload) finish(c *stagedFile, e Entry) error {
	defer func() { c.f.Close(); c.f = nil }()
	if err := c.f.Chmod(e.perm()); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if o := u.s.opts.Owner; o != nil {
		if err := c.f.Chown(o.UID, o.GID); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
	}
	if !u.s.opts.NoSync && !syncsWholeFS {
		if err := c.f.Sync(); err != nil {
			return writeError(e.Path, err)
		}
	}
	if err := c.f.Close(); err != nil {
		return writeError(e.Path, err)
	}
	return nil
}

// Commit renames the received files into place, one atomic rename each,
// then updates stored files' modes, symlinks and directory modes. Files
// are flushed to disk before they are renamed, and the renames before
// Commit returns, unless Options.NoSync.
func (u *Upload) Commit(ctx context.Context) (Result, error) {
	if u.closed {
		return Result{}, errors.New("storage: upload is closed")
	}
	if u.cur != nil || u.next < len(u.files) {
		return Result{}, fmt.Errorf("%w: the upload ended after %d of %d files", ErrInvalidManifest, len(u.staged), len(u.files))
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if err := u.flush(); err != nil {
		return Result{}, err
	}
	u.acct.commit.Lock()
	defer u.acct.commit.Unlock()
	res := Result{RemoteDir: RemotePath(u.p.rel), FilesWritten: int64(len(u.staged)), BytesWritten: u.received}
	hashes := u.acct.hashes
	for _, sf := range u.staged {
		full := path.Join(u.p.rel, u.p.entries[sf.entry].Path)
		if err := u.root.Rename(sf.tmp, full); err != nil {
			return Result{}, u.renameError(full, err)
		}
		if fi, err := u.root.Lstat(full); err == nil {
			hashes.put(full, fi, sf.sum)
		}
	}
	sent := make(map[int]bool, len(u.files))
	for _, i := range u.files {
		sent[i] = true
	}
	for i, e := range u.p.entries {
		full := path.Join(u.p.rel, e.Path)
		var err error
		switch {
		case e.Kind == KindFile && !sent[i]:
			res.FilesUnchanged++
			err = u.chmod(full, e.perm())
		case e.Kind == KindSymlink:
			err = u.symlink(i, e, full)
		}
		if err != nil {
			return Result{}, err
		}
	}
	for _, e := range u.p.entries {
		if e.Kind == KindDir {
			if err := u.chmod(path.Join(u.p.rel, e.Path), e.perm()); err != nil {
				return Result{}, err
			}
		}
	}
	if err := u.flush(); err != nil {
		return Result{}, err
	}
	if err := hashes.save(u.root); err != nil {
		u.s.log.Warn("save hash cache", "account", u.p.account, "err", err)
	}
	u.s.log.Info("synced", "account", u.p.account, "dir", res.RemoteDir, "files_written", res.FilesWritten,
		"bytes_written", res.BytesWritten, "files_unchanged", res.FilesUnchanged)
	return res, nil
}

func (u *Upload) renameError(full string, err error) error {
	if fi, lerr := u.root.Lstat(full); lerr == nil && fi.IsDir() {
		return fmt.Errorf("%w: %s became a directory on the server during the sync", ErrConflict, RemotePath(full))
	}
	return fmt.Errorf("storage: commit %s: %w", RemotePath(full), err)
}

// chmod sets the permission bits of a stored file or directory, if they
// differ.
func (u *Upload) chmod(full string, perm fs.FileMode) error {
	fi, err := u.root.Lstat(full)
	if err != nil {
		return conflict(full, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 || fi.Mode().Perm() == perm {
		return nil
	}
	if err := u.root.Chmod(full, perm); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}

// symlink puts the link e at full, atomically replacing what is there.
func (u *Upload) symlink(i int, e Entry, full string) error {
	if target, err := u.root.Readlink(full); err == nil && target == e.LinkTarget {
		return nil
	}
	tmp := path.Join(u.stage, "link-"+strconv.Itoa(i))
	if err := u.root.Symlink(e.LinkTarget, tmp); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if o := u.s.opts.Owner; o != nil {
		if err := u.root.Lchown(tmp, o.UID, o.GID); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
	}
	if err := u.root.Rename(tmp, full); err != nil {
		return u.renameError(full, err)
	}
	return nil
}

func (u *Upload) flush() error {
	if u.s.opts.NoSync {
		return nil
	}
	if err := syncFS(u.root); err != nil {
		return fmt.Errorf("storage: flush to disk: %w", err)
	}
	return nil
}

// Close ends the upload: what was staged and not committed is removed and
// the quota reservation released.
func (u *Upload) Close() error {
	if u.closed {
		return nil
	}
	u.closed = true
	if u.cur != nil && u.cur.f != nil {
		u.cur.f.Close()
	}
	u.acct.stage.Lock()
	err := u.root.RemoveAll(u.stage)
	_ = u.root.Remove(stagingDir) // only if no other upload uses it
	u.acct.stage.Unlock()
	u.s.mu.Lock()
	if u.s.reserved[u.p.account] -= u.incoming; u.s.reserved[u.p.account] <= 0 {
		delete(u.s.reserved, u.p.account)
	}
	u.s.mu.Unlock()
	u.root.Close()
	if err != nil {
		return fmt.Errorf("storage: remove staged files: %w", err)
	}
	return nil
}
