package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultQuotaBytes is an account's quota unless configured: 10 GiB.
const DefaultQuotaBytes int64 = 10 << 30

// NoQuota as Options.QuotaBytes lets accounts store without limit.
const NoQuota int64 = -1

// DefaultPlanTTL is how long a planned sync waits for its upload.
const DefaultPlanTTL = time.Hour

// Options configures a Store.
type Options struct {
	// DataDir is the server's data directory (absolute). Account
	// directories live in DataDir/data, the store's own state in
	// DataDir/storage.
	DataDir string
	// QuotaBytes caps the bytes of regular files one account stores. 0
	// means DefaultQuotaBytes; NoQuota, no limit. It is checked before a
	// sync writes anything; files that functions write into /data count
	// towards it, and are stopped by it only where Volumes are set.
	QuotaBytes int64
	// Owner, when set, owns what the store creates in account directories:
	// the uid sandboxed workers run as, so that they can write /data.
	Owner *Owner
	// NoSync skips flushing uploads to disk before they are renamed into
	// place and before the sync is reported done. Files still appear whole
	// or not at all while the host stays up; a power loss may lose them.
	NoSync bool
	// PlanTTL bounds how long a plan waits for its upload (DefaultPlanTTL).
	PlanTTL time.Duration
	Logger  *slog.Logger
	// Volumes, when set, mounts each account's loop volume on its
	// directory before the store uses it: the quota then binds every
	// write, functions' included, as the filesystem's size.
	Volumes *LoopVolumes
}

// Store keeps the accounts' /data directories. It is safe for concurrent
// use; syncs of one account run concurrently and commit one at a time.
type Store struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	plans    map[string]*plan
	reserved map[string]int64 // bytes being uploaded, per account
	accounts map[string]*accountState
}

// accountState is what the store holds per account while it runs.
type accountState struct {
	commit sync.Mutex // serializes commits
	stage  sync.Mutex // creating and removing the staging directory
	hashes *hashCache
}

// plan is a sync between PlanSync and Upload.
type plan struct {
	id      string
	account string
	rel     string // the synced directory, relative to the account directory
	entries []Entry
	stored  map[int][]byte // file entries stored with the same size: their hash
	created time.Time
}

// Plan is what the client learns from planning a sync.
type Plan struct {
	ID string
	// RemoteDir is the synced directory as workers see it.
	RemoteDir string
	// Stored maps the index of each file entry that is stored with the same
	// size to the stored content's SHA-256.
	Stored map[int][]byte
}

// New returns a Store over opts.DataDir. It removes what interrupted
// uploads of an earlier run left in the staging directories.
func New(opts Options) (*Store, error) {
	if !filepath.IsAbs(opts.DataDir) {
		return nil, fmt.Errorf("storage: data directory %q is not absolute", opts.DataDir)
	}
	if opts.QuotaBytes == 0 {
		opts.QuotaBytes = DefaultQuotaBytes
	}
	if opts.PlanTTL <= 0 {
		opts.PlanTTL = DefaultPlanTTL
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		opts:     opts,
		log:      log,
		now:      time.Now,
		plans:    map[string]*plan{},
		reserved: map[string]int64{},
		accounts: map[string]*accountState{},
	}
	if err := os.MkdirAll(s.volumesDir(), 0o700); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	s.removeStaleStaging()
	return s, nil
}

func (s *Store) volumesDir() string { return filepath.Join(s.opts.DataDir, "data") }

// Quota is the per-account limit in bytes; negative means none.
func (s *Store) Quota() int64 { return s.opts.QuotaBytes }

func (s *Store) removeStaleStaging() {
	dirs, err := os.ReadDir(s.volumesDir())
	if err != nil {
		s.log.Warn("list account directories", "err", err)
		return
	}
	for _, d := range dirs {
		if !d.IsDir() || validAccount(d.Name()) != nil {
			continue
		}
		root, err := os.OpenRoot(filepath.Join(s.volumesDir(), d.Name()))
		if err != nil {
			continue
		}
		if _, err := root.Lstat(stagingDir); err == nil {
			if err := root.RemoveAll(stagingDir); err != nil {
				s.log.Warn("remove interrupted uploads", "account", d.Name(), "err", err)
			} else {
				s.log.Info("removed interrupted uploads", "account", d.Name())
			}
		}
		root.Close()
	}
}

func (s *Store) account(name string) *accountState {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.accounts[name]
	if a == nil {
		a = &accountState{hashes: newHashCache(filepath.Join(s.opts.DataDir, "storage", name, "hashes.json"))}
		s.accounts[name] = a
	}
	return a
}

// openAccount opens (creating it if needed) the account's directory as a
// root that nothing can escape.
func (s *Store) openAccount(account string) (*os.Root, error) {
	if s.opts.Volumes != nil {
		if err := s.opts.Volumes.Ensure(account); err != nil {
			return nil, err
		}
	}
	var opts []DirOption
	if o := s.opts.Owner; o != nil {
		opts = append(opts, WithOwner(o.UID, o.GID))
	}
	dir, err := AccountDir(s.opts.DataDir, account, opts...)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return root, nil
}

// Plan checks a manifest for the directory remoteDir (as workers see it,
// under /data) against what account stores and starts a sync. It writes
// nothing.
func (s *Store) Plan(ctx context.Context, account, remoteDir string, entries []Entry) (Plan, error) {
	rel, err := RemoteRel(remoteDir)
	if err != nil {
		return Plan{}, err
	}
	if err := checkManifest(entries); err != nil {
		return Plan{}, err
	}
	if rel == "." {
		for _, e := range entries {
			if first, _, _ := strings.Cut(e.Path, "/"); first == stagingDir {
				return Plan{}, fmt.Errorf("%w: /data/%s is reserved for atoll's own use", ErrInvalidPath, stagingDir)
			}
		}
	}
	root, err := s.openAccount(account)
	if err != nil {
		return Plan{}, err
	}
	defer root.Close()
	if err := checkSyncRoot(root, rel); err != nil {
		return Plan{}, err
	}
	hashes := s.account(account).hashes
	stored := map[int][]byte{}
	// Directories that do not exist yet, or are links that the sync will
	// replace by directories: nothing beneath them is stored.
	fresh := map[string]bool{}
	for _, i := range parentsFirst(entries) {
		if err := ctx.Err(); err != nil {
			return Plan{}, err
		}
		e := entries[i]
		if fresh[path.Dir(e.Path)] {
			fresh[e.Path] = e.Kind == KindDir
			continue
		}
		full := path.Join(rel, e.Path)
		fi, err := root.Lstat(full)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				fresh[e.Path] = e.Kind == KindDir
				continue
			}
			return Plan{}, conflict(full, err)
		}
		if err := checkReplace(e, full, fi); err != nil {
			return Plan{}, err
		}
		if e.Kind == KindDir && fi.Mode()&fs.ModeSymlink != 0 {
			fresh[e.Path] = true
			continue
		}
		if e.Kind == KindFile && fi.Mode().IsRegular() && fi.Size() == e.Size {
			sum, err := hashes.hashFile(ctx, root, full)
			if err != nil {
				return Plan{}, fmt.Errorf("storage: hash %s: %w", RemotePath(full), err)
			}
			stored[i] = sum
		}
	}
	if err := hashes.save(root); err != nil {
		s.log.Warn("save hash cache", "account", account, "err", err)
	}
	p := &plan{id: newID(), account: account, rel: rel, entries: entries, stored: stored, created: s.now()}
	s.addPlan(p)
	s.log.Debug("planned sync", "account", account, "sync", p.id, "dir", RemotePath(rel),
		"entries", len(entries), "stored_same_size", len(stored))
	return Plan{ID: p.id, RemoteDir: RemotePath(rel), Stored: stored}, nil
}

// maxPlansPerAccount bounds the plans an account may leave waiting for
// their upload; beyond it, its oldest plan is dropped.
const maxPlansPerAccount = 64

func (s *Store) addPlan(p *plan) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var oldest *plan
	n := 0
	for id, old := range s.plans {
		switch {
		case s.now().Sub(old.created) > s.opts.PlanTTL:
			delete(s.plans, id)
		case old.account == p.account:
			n++
			if oldest == nil || old.created.Before(oldest.created) {
				oldest = old
			}
		}
	}
	if n >= maxPlansPerAccount {
		delete(s.plans, oldest.id)
	}
	s.plans[p.id] = p
}

// checkSyncRoot refuses a synced directory that exists as something other
// than a directory, or that links outside the account directory.
func checkSyncRoot(root *os.Root, rel string) error {
	fi, err := root.Stat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return conflict(rel, err)
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is a file, not a directory", ErrConflict, RemotePath(rel))
	}
	return nil
}

// checkReplace says whether entry e may replace what is stored at full
// (described by fi). Links are replaced by anything; files and links by
// files and links; directories stay directories. A clash that would
// delete stored data is refused rather than guessed at.
func checkReplace(e Entry, full string, fi fs.FileInfo) error {
	stored := fi.Mode()
	switch {
	case stored&fs.ModeSymlink != 0:
		return nil
	case stored.IsDir() && e.Kind != KindDir:
		return fmt.Errorf("%w: %s is a directory on the server and a %s here; remove it first (atoll data rm)",
			ErrConflict, RemotePath(full), e.Kind)
	case stored.IsRegular() && e.Kind == KindDir:
		return fmt.Errorf("%w: %s is a file on the server and a directory here; remove it first (atoll data rm)",
			ErrConflict, RemotePath(full))
	case !stored.IsDir() && !stored.IsRegular():
		return fmt.Errorf("%w: %s is a special file on the server", ErrConflict, RemotePath(full))
	}
	return nil
}

// conflict describes an error reaching a stored path: a file where a
// directory should be, or a link that leads out of the account directory.
func conflict(rel string, err error) error {
	if errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%w: a parent of %s is a file on the server", ErrConflict, RemotePath(rel))
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%w: cannot reach %s on the server: %v", ErrConflict, RemotePath(rel), err)
}

// parentsFirst returns the indexes of entries, shallowest paths first.
func parentsFirst(entries []Entry) []int {
	order := make([]int, len(entries))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return strings.Count(entries[a].Path, "/") - strings.Count(entries[b].Path, "/")
	})
	return order
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Usage returns the bytes of regular files account stores.
func (s *Store) Usage(account string) (int64, error) {
	root, err := s.openAccount(account)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	return usage(root)
}

// usage sums the sizes of the regular files under root, leaving out
// uploads in flight (they are reserved separately).
func usage(root *os.Root) (int64, error) {
	var total int64
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if d.IsDir() && p == stagingDir {
			return fs.SkipDir
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			total += fi.Size()
		}
		return nil
	})
	return total, err
}
