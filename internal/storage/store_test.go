package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// node is one entry of a test tree: content for a file, isDir, or a link.
type node struct {
	content string
	isDir   bool
	link    string
	mode    fs.FileMode
}

type tree map[string]node

func (tr tree) entries() []Entry {
	var out []Entry
	for p, n := range tr {
		e := Entry{Path: p, Mode: n.mode}
		switch {
		case n.isDir:
			e.Kind = KindDir
			if e.Mode == 0 {
				e.Mode = 0o755
			}
		case n.link != "":
			e.Kind, e.LinkTarget = KindSymlink, n.link
		default:
			e.Kind, e.Size = KindFile, int64(len(n.content))
			if e.Mode == 0 {
				e.Mode = 0o644
			}
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func newTestStore(t *testing.T, opts Options) *Store {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	opts.NoSync = true
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// syncTree does what the SDK does: plan, leave out files whose stored hash
// matches, upload the rest in small chunks, commit.
func syncTree(t *testing.T, s *Store, account, remote string, tr tree) (Result, error) {
	t.Helper()
	ctx := context.Background()
	entries := tr.entries()
	p, err := s.Plan(ctx, account, remote, entries)
	if err != nil {
		return Result{}, err
	}
	var send []int
	for i, e := range entries {
		if e.Kind != KindFile {
			continue
		}
		sum := sha256.Sum256([]byte(tr[e.Path].content))
		if stored, ok := p.Stored[i]; ok && bytes.Equal(stored, sum[:]) {
			continue
		}
		send = append(send, i)
	}
	u, err := s.BeginUpload(ctx, account, p.ID, send)
	if err != nil {
		return Result{}, err
	}
	defer u.Close()
	for _, i := range send {
		data := []byte(tr[entries[i].Path].content)
		for len(data) > 0 {
			n := min(len(data), 3)
			if _, err := u.Write(data[:n]); err != nil {
				return Result{}, err
			}
			data = data[n:]
		}
		sum := sha256.Sum256([]byte(tr[entries[i].Path].content))
		if err := u.EndFile(sum[:]); err != nil {
			return Result{}, err
		}
	}
	return u.Commit(ctx)
}

// readTree describes what is stored under dir, the way tree does.
func readTree(t *testing.T, dir string) tree {
	t.Helper()
	out := tree{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if rel == stagingDir {
			return fs.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			out[rel] = node{isDir: true, mode: fi.Mode().Perm()}
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = node{link: target}
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = node{content: string(data), mode: fi.Mode().Perm()}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var cmpNode = cmp.AllowUnexported(node{})

func accountDir(t *testing.T, s *Store, account string) string {
	t.Helper()
	dir, err := AccountDir(s.opts.DataDir, account)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSyncWritesTree(t *testing.T) {
	s := newTestStore(t, Options{})
	tr := tree{
		"a.txt":               {content: "hello", mode: 0o644},
		"run.sh":              {content: "#!/bin/sh\necho hi\n", mode: 0o755},
		"secret":              {content: "s", mode: 0o600},
		"empty.txt":           {content: "", mode: 0o644},
		"sub":                 {isDir: true, mode: 0o755},
		"sub/deeper":          {isDir: true, mode: 0o750},
		"sub/deeper/b.bin":    {content: strings.Repeat("x", 1000), mode: 0o644},
		"empty-dir":           {isDir: true, mode: 0o755},
		"ünïcode ✓":           {isDir: true, mode: 0o755},
		"ünïcode ✓/模型.txt":    {content: "数据", mode: 0o644},
		"sub/link-to-a":       {link: "../a.txt"},
		"sub/deeper/link-dir": {link: ".."},
	}
	res, err := syncTree(t, s, "acme", "/data/project", tr)
	if err != nil {
		t.Fatal(err)
	}
	want := Result{RemoteDir: "/data/project", FilesWritten: 6, BytesWritten: int64(5 + 18 + 1 + 1000 + len("数据"))}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	got := readTree(t, filepath.Join(accountDir(t, s, "acme"), "project"))
	if diff := cmp.Diff(tr, got, cmpNode); diff != "" {
		t.Errorf("stored tree (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(accountDir(t, s, "acme"), stagingDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("staging directory left behind: %v", err)
	}
}

func TestSyncIsIncremental(t *testing.T) {
	s := newTestStore(t, Options{})
	tr := tree{
		"big":     {content: strings.Repeat("b", 4096)},
		"small":   {content: "s"},
		"d":       {isDir: true},
		"d/other": {content: "o"},
	}
	if _, err := syncTree(t, s, "acme", "/data/x", tr); err != nil {
		t.Fatal(err)
	}
	res, err := syncTree(t, s, "acme", "/data/x", tr)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Result{RemoteDir: "/data/x", FilesUnchanged: 3}); res != want {
		t.Errorf("unchanged second sync = %+v; want %+v", res, want)
	}

	tr["small"] = node{content: "S"}                                  // same size, new content
	tr["d/other"] = node{content: "longer now", mode: 0o600}          // new size
	tr["big"] = node{content: strings.Repeat("b", 4096), mode: 0o640} // new mode only
	res, err = syncTree(t, s, "acme", "/data/x", tr)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Result{RemoteDir: "/data/x", FilesWritten: 2, BytesWritten: 11, FilesUnchanged: 1}); res != want {
		t.Errorf("changed sync = %+v; want %+v", res, want)
	}
	got := readTree(t, filepath.Join(accountDir(t, s, "acme"), "x"))
	for p, n := range tr {
		if n.mode == 0 && !n.isDir {
			n.mode = 0o644
			tr[p] = n
		}
		if n.isDir {
			tr[p] = node{isDir: true, mode: 0o755}
		}
	}
	if diff := cmp.Diff(tr, got, cmpNode); diff != "" {
		t.Errorf("stored tree (-want +got):\n%s", diff)
	}
}

func TestPlanHashesOnlyChangedFiles(t *testing.T) {
	s := newTestStore(t, Options{})
	if _, err := syncTree(t, s, "acme", "/data", tree{"f": {content: "aaaa"}}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(accountDir(t, s, "acme"), "f")
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	// A worker rewrites the file in place with the same size and puts the
	// mtime back: the cache must notice (the ctime changed) and hash again.
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(file, []byte("bbbb"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(file, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	p, err := s.Plan(context.Background(), "acme", "/data", tree{"f": {content: "aaaa"}}.entries())
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte("bbbb"))
	if !bytes.Equal(p.Stored[0], want[:]) {
		t.Errorf("planned hash %x; want the new content's %x", p.Stored[0], want)
	}
	// The hash cache outlives the store: a new one (a restarted server)
	// finds it on disk.
	s2 := newTestStore(t, Options{DataDir: s.opts.DataDir})
	a := s2.account("acme")
	a.hashes.mu.Lock()
	a.hashes.loadLocked()
	n := len(a.hashes.entries)
	a.hashes.mu.Unlock()
	if n != 1 {
		t.Errorf("reloaded hash cache has %d entries; want 1", n)
	}
}

func TestInterruptedUploadLeavesNoPartialFile(t *testing.T) {
	s := newTestStore(t, Options{})
	if _, err := syncTree(t, s, "acme", "/data/m", tree{"weights": {content: "old weights"}}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tr := tree{"weights": {content: "new weights, longer"}, "added": {content: "new file"}}
	entries := tr.entries() // added, weights
	p, err := s.Plan(ctx, "acme", "/data/m", entries)
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.BeginUpload(ctx, "acme", p.ID, []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write([]byte("new file")); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("new file"))
	if err := u.EndFile(sum[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write([]byte("new wei")); err != nil {
		t.Fatal(err)
	}
	// The stream breaks here: the service closes without committing.
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	got := readTree(t, filepath.Join(accountDir(t, s, "acme"), "m"))
	want := tree{"weights": {content: "old weights", mode: 0o644}}
	if diff := cmp.Diff(want, got, cmpNode); diff != "" {
		t.Errorf("after an interrupted upload (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(accountDir(t, s, "acme"), stagingDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("staging directory left behind: %v", err)
	}
	if len(s.reserved) != 0 {
		t.Errorf("quota reservations left: %v", s.reserved)
	}
}

func TestStaleStagingRemovedAtStart(t *testing.T) {
	s := newTestStore(t, Options{})
	ctx := context.Background()
	tr := tree{"f": {content: "content"}}
	p, err := s.Plan(ctx, "acme", "/data", tr.entries())
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.BeginUpload(ctx, "acme", p.ID, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write([]byte("cont")); err != nil {
		t.Fatal(err)
	}
	// The server dies here, without Close.
	staging := filepath.Join(accountDir(t, s, "acme"), stagingDir)
	if _, err := os.Stat(staging); err != nil {
		t.Fatalf("no staging directory during the upload: %v", err)
	}
	newTestStore(t, Options{DataDir: s.opts.DataDir})
	if _, err := os.Stat(staging); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a new store left the interrupted upload: %v", err)
	}
	if _, err := os.Stat(filepath.Join(accountDir(t, s, "acme"), "f")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial file visible: %v", err)
	}
}

func TestUploadChecksContent(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		send   func(u *Upload) error
		commit bool
	}{
		{name: "wrong hash", send: func(u *Upload) error {
			if _, err := u.Write([]byte("abcd")); err != nil {
				return err
			}
			sum := sha256.Sum256([]byte("abce"))
			return u.EndFile(sum[:])
		}},
		{name: "too long", send: func(u *Upload) error {
			_, err := u.Write([]byte("abcde"))
			return err
		}},
		{name: "too short", send: func(u *Upload) error {
			if _, err := u.Write([]byte("abc")); err != nil {
				return err
			}
			sum := sha256.Sum256([]byte("abc"))
			return u.EndFile(sum[:])
		}},
		{name: "stream ends early", commit: true, send: func(u *Upload) error {
			_, err := u.Write([]byte("ab"))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t, Options{})
			p, err := s.Plan(ctx, "acme", "/data", tree{"f": {content: "abcd"}}.entries())
			if err != nil {
				t.Fatal(err)
			}
			u, err := s.BeginUpload(ctx, "acme", p.ID, []int{0})
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			err = tt.send(u)
			if tt.commit {
				if err != nil {
					t.Fatal(err)
				}
				_, err = u.Commit(ctx)
				if !errors.Is(err, ErrInvalidManifest) {
					t.Fatalf("Commit = %v; want ErrInvalidManifest", err)
				}
			} else if !errors.Is(err, ErrContentMismatch) {
				t.Fatalf("got %v; want ErrContentMismatch", err)
			}
			u.Close()
			if _, err := os.Lstat(filepath.Join(accountDir(t, s, "acme"), "f")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("file visible after a failed upload: %v", err)
			}
		})
	}
}

func TestBeginUploadChecksPlan(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, Options{})
	tr := tree{"a": {content: "a"}, "d": {isDir: true}}
	plan := func() Plan {
		p, err := s.Plan(ctx, "acme", "/data", tr.entries())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := plan()
	if _, err := s.BeginUpload(ctx, "other", p.ID, []int{0}); !errors.Is(err, ErrUnknownSync) {
		t.Errorf("another account's sync: %v; want ErrUnknownSync", err)
	}
	if _, err := s.BeginUpload(ctx, "acme", "nope", []int{0}); !errors.Is(err, ErrUnknownSync) {
		t.Errorf("unknown sync: %v; want ErrUnknownSync", err)
	}
	for name, files := range map[string][]int{
		"a directory as a file":        {1},
		"out of range":                 {7},
		"twice":                        {0, 0},
		"file neither sent nor stored": {},
	} {
		if _, err := s.BeginUpload(ctx, "acme", plan().ID, files); !errors.Is(err, ErrInvalidManifest) {
			t.Errorf("%s: %v; want ErrInvalidManifest", name, err)
		}
	}
	p = plan()
	u, err := s.BeginUpload(ctx, "acme", p.ID, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	u.Close()
	if _, err := s.BeginUpload(ctx, "acme", p.ID, []int{0}); !errors.Is(err, ErrUnknownSync) {
		t.Errorf("a plan used twice: %v; want ErrUnknownSync", err)
	}
	s.now = func() time.Time { return time.Now().Add(2 * DefaultPlanTTL) }
	if _, err := s.BeginUpload(ctx, "acme", plan().ID, []int{0}); err != nil {
		t.Errorf("fresh plan: %v", err)
	}
}

func TestQuota(t *testing.T) {
	s := newTestStore(t, Options{QuotaBytes: 100})
	first := tree{"a": {content: strings.Repeat("a", 60)}}
	if _, err := syncTree(t, s, "acme", "/data/one", first); err != nil {
		t.Fatal(err)
	}
	_, err := syncTree(t, s, "acme", "/data/two", tree{"b": {content: strings.Repeat("b", 41)}})
	var qe *QuotaError
	if !errors.As(err, &qe) || !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("sync over quota: %v; want a QuotaError", err)
	}
	if qe.Quota != 100 || qe.Used != 60 || qe.Incoming != 41 {
		t.Errorf("QuotaError = %+v", qe)
	}
	dir := accountDir(t, s, "acme")
	if diff := cmp.Diff(tree{"one": {isDir: true, mode: 0o755}, "one/a": {content: strings.Repeat("a", 60), mode: 0o644}},
		readTree(t, dir), cmpNode); diff != "" {
		t.Errorf("after a refused sync (-want +got):\n%s", diff)
	}
	// Replacing a file counts only the difference.
	if _, err := syncTree(t, s, "acme", "/data/one", tree{"a": {content: strings.Repeat("c", 100)}}); err != nil {
		t.Errorf("replacing within the quota: %v", err)
	}
	// Another account has its own quota.
	if _, err := syncTree(t, s, "other", "/data", tree{"b": {content: strings.Repeat("b", 100)}}); err != nil {
		t.Errorf("another account: %v", err)
	}
}

func TestQuotaCountsUploadsInFlight(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, Options{QuotaBytes: 100})
	begin := func(name string) (*Upload, error) {
		p, err := s.Plan(ctx, "acme", "/data", tree{name: {content: strings.Repeat("x", 60)}}.entries())
		if err != nil {
			t.Fatal(err)
		}
		return s.BeginUpload(ctx, "acme", p.ID, []int{0})
	}
	u, err := begin("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := begin("b"); !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("second concurrent upload: %v; want ErrQuotaExceeded", err)
	}
	u.Close()
	u, err = begin("b")
	if err != nil {
		t.Errorf("after the first was abandoned: %v", err)
	} else {
		u.Close()
	}
}

func TestNoQuota(t *testing.T) {
	s := newTestStore(t, Options{QuotaBytes: NoQuota})
	if _, err := syncTree(t, s, "acme", "/data", tree{"a": {content: strings.Repeat("a", 1000)}}); err != nil {
		t.Fatal(err)
	}
}

func TestConflicts(t *testing.T) {
	tests := []struct {
		name   string
		stored tree
		local  tree
	}{
		{name: "file over a directory", stored: tree{"x": {isDir: true}, "x/f": {content: "f"}}, local: tree{"x": {content: "x"}}},
		{name: "link over a directory", stored: tree{"x": {isDir: true}}, local: tree{"x": {link: "y"}, "y": {content: "y"}}},
		{name: "directory over a file", stored: tree{"x": {content: "x"}}, local: tree{"x": {isDir: true}}},
		{name: "beneath a stored file", stored: tree{"x": {content: "x"}}, local: tree{"x": {isDir: true}, "x/f": {content: "f"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t, Options{})
			if _, err := syncTree(t, s, "acme", "/data", tt.stored); err != nil {
				t.Fatal(err)
			}
			if _, err := syncTree(t, s, "acme", "/data", tt.local); !errors.Is(err, ErrConflict) {
				t.Fatalf("sync = %v; want ErrConflict", err)
			}
		})
	}
	t.Run("remote directory is a file", func(t *testing.T) {
		s := newTestStore(t, Options{})
		if _, err := syncTree(t, s, "acme", "/data", tree{"x": {content: "x"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := syncTree(t, s, "acme", "/data/x", tree{"f": {content: "f"}}); !errors.Is(err, ErrConflict) {
			t.Fatalf("sync = %v; want ErrConflict", err)
		}
	})
}

func TestLinksAreReplaced(t *testing.T) {
	s := newTestStore(t, Options{})
	if _, err := syncTree(t, s, "acme", "/data", tree{"t": {content: "t"}, "x": {link: "t"}, "y": {link: "t"}}); err != nil {
		t.Fatal(err)
	}
	local := tree{"t": {content: "t"}, "x": {isDir: true}, "x/f": {content: "f"}, "y": {content: "now a file"}}
	if _, err := syncTree(t, s, "acme", "/data", local); err != nil {
		t.Fatal(err)
	}
	want := tree{"t": {content: "t", mode: 0o644}, "x": {isDir: true, mode: 0o755}, "x/f": {content: "f", mode: 0o644},
		"y": {content: "now a file", mode: 0o644}}
	if diff := cmp.Diff(want, readTree(t, accountDir(t, s, "acme")), cmpNode); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// A worker can leave any link in /data; the store must never follow one
// out of the account directory.
func TestStoredLinksCannotLeadOut(t *testing.T) {
	s := newTestStore(t, Options{})
	outside := t.TempDir()
	dir := accountDir(t, s, "acme")
	for name, target := range map[string]string{"abs": outside, "rel": "../../../../../../../../.." + outside} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		_, err := syncTree(t, s, "acme", "/data/"+name+"/x", tree{"f": {content: "f"}})
		if !errors.Is(err, ErrConflict) {
			t.Errorf("sync through %s link: %v; want ErrConflict", name, err)
		}
		_, err = syncTree(t, s, "acme", "/data", tree{name: {isDir: true}, name + "/f": {content: "f"}})
		if err != nil {
			t.Errorf("sync replacing the %s link by a directory: %v", name, err)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("wrote outside the account directory: %v", entries)
	}
}

func TestAccountsAreSeparate(t *testing.T) {
	s := newTestStore(t, Options{})
	if _, err := syncTree(t, s, "alice", "/data", tree{"secret": {content: "alice's"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := syncTree(t, s, "bob", "/data", tree{"mine": {content: "bob's"}}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tree{"mine": {content: "bob's", mode: 0o644}}, readTree(t, accountDir(t, s, "bob")), cmpNode); diff != "" {
		t.Errorf("bob's /data (-want +got):\n%s", diff)
	}
	p, err := s.Plan(context.Background(), "bob", "/data", tree{"secret": {content: "alice's"}}.entries())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Stored) != 0 {
		t.Errorf("bob's plan sees stored files %v", p.Stored)
	}
	if _, err := s.Plan(context.Background(), "../alice", "/data", nil); !errors.Is(err, ErrInvalidAccount) {
		t.Errorf("account name with ..: %v", err)
	}
}

func TestStagingNameIsReserved(t *testing.T) {
	s := newTestStore(t, Options{})
	for _, tr := range []tree{
		{stagingDir: {content: "x"}},
		{stagingDir: {isDir: true}, stagingDir + "/f": {content: "x"}},
	} {
		if _, err := syncTree(t, s, "acme", "/data", tr); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("sync of %v into /data: %v; want ErrInvalidPath", tr, err)
		}
	}
	// Deeper down the name is nobody's.
	if _, err := syncTree(t, s, "acme", "/data/sub", tree{stagingDir: {content: "x"}}); err != nil {
		t.Error(err)
	}
}

func TestPlansPerAccountAreBounded(t *testing.T) {
	s := newTestStore(t, Options{})
	ctx := context.Background()
	var first Plan
	for i := range maxPlansPerAccount + 1 {
		p, err := s.Plan(ctx, "acme", "/data", nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = p
		}
		s.now = func() time.Time { return time.Now().Add(time.Duration(i+1) * time.Millisecond) }
	}
	if _, err := s.Plan(ctx, "other", "/data", nil); err != nil {
		t.Fatal(err)
	}
	if len(s.plans) != maxPlansPerAccount+1 {
		t.Errorf("%d plans kept; want %d", len(s.plans), maxPlansPerAccount+1)
	}
	if _, err := s.BeginUpload(ctx, "acme", first.ID, nil); !errors.Is(err, ErrUnknownSync) {
		t.Errorf("the oldest plan: %v; want ErrUnknownSync", err)
	}
}
