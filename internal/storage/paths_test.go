package storage

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRemoteRel(t *testing.T) {
	tests := []struct {
		name    string
		remote  string
		want    string
		wantErr bool
	}{
		{name: "the mount itself", remote: "/data", want: "."},
		{name: "trailing slash", remote: "/data/", want: "."},
		{name: "a directory", remote: "/data/models", want: "models"},
		{name: "nested", remote: "/data/a/b/c", want: "a/b/c"},
		{name: "redundant slashes", remote: "/data//a/./b/", want: "a/b"},
		{name: "unicode", remote: "/data/données/模型", want: "données/模型"},
		{name: "relative", remote: "data/x", wantErr: true},
		{name: "empty", remote: "", wantErr: true},
		{name: "outside /data", remote: "/etc", wantErr: true},
		{name: "prefix only", remote: "/database", wantErr: true},
		{name: "dot dot out", remote: "/data/../etc", wantErr: true},
		{name: "dot dot inside", remote: "/data/a/../b", wantErr: true},
		{name: "root", remote: "/", wantErr: true},
		{name: "staging directory", remote: "/data/.atoll-staging/x", wantErr: true},
		{name: "NUL", remote: "/data/a\x00b", wantErr: true},
		{name: "invalid UTF-8", remote: "/data/\xff", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RemoteRel(tt.remote)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidPath) {
					t.Fatalf("RemoteRel(%q) = %q, %v; want ErrInvalidPath", tt.remote, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("RemoteRel(%q) = %q, %v; want %q", tt.remote, got, err, tt.want)
			}
			if back := RemotePath(got); back != filepathCleanSlash(tt.remote) {
				t.Errorf("RemotePath(%q) = %q", got, back)
			}
		})
	}
}

func filepathCleanSlash(p string) string { return filepath.ToSlash(filepath.Clean(p)) }

func TestCheckEntryPath(t *testing.T) {
	tests := []struct {
		path string
		ok   bool
	}{
		{"a", true},
		{"a/b/c.txt", true},
		{"ünï/cödé ✓.txt", true},
		{".hidden", true},
		{"a..b", true},
		{"", false},
		{".", false},
		{"..", false},
		{"../x", false},
		{"a/../../x", false},
		{"a/..", false},
		{"/etc/passwd", false},
		{"a//b", false},
		{"a/./b", false},
		{"a/", false},
		{"a\x00b", false},
		{"\xff", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			err := checkEntryPath(tt.path)
			if tt.ok != (err == nil) {
				t.Fatalf("checkEntryPath(%q) = %v; want ok=%v", tt.path, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidPath) {
				t.Fatalf("error %v is not ErrInvalidPath", err)
			}
		})
	}
}

func TestCheckLinkTarget(t *testing.T) {
	tests := []struct {
		name   string
		entry  string
		target string
		ok     bool
	}{
		{"sibling", "link", "file", true},
		{"down", "link", "dir/file", true},
		{"own directory", "link", ".", true},
		{"up within the tree", "a/b/link", "../../file", true},
		{"up and down", "a/link", "../c/file", true},
		{"up out of the tree", "link", "../outside", false},
		{"up too far from depth", "a/b/link", "../../../x", false},
		{"absolute", "link", "/etc/passwd", false},
		{"absolute inside /data", "link", "/data/x", false},
		{"unclean climb hidden after a name", "a/link", "x/../../..", false},
		{"unclean dot", "link", "./file", false},
		{"empty", "link", "", false},
		{"NUL", "link", "a\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkLinkTarget(tt.entry, tt.target)
			if tt.ok != (err == nil) {
				t.Fatalf("checkLinkTarget(%q, %q) = %v; want ok=%v", tt.entry, tt.target, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidPath) {
				t.Fatalf("error %v is not ErrInvalidPath", err)
			}
		})
	}
}

func TestCheckManifest(t *testing.T) {
	file := func(p string) Entry { return Entry{Path: p, Kind: KindFile, Size: 1, Mode: 0o644} }
	dir := func(p string) Entry { return Entry{Path: p, Kind: KindDir, Mode: 0o755} }
	link := func(p, target string) Entry { return Entry{Path: p, Kind: KindSymlink, LinkTarget: target} }
	tests := []struct {
		name    string
		entries []Entry
		wantErr error
	}{
		{name: "empty", entries: nil},
		{name: "tree", entries: []Entry{dir("a"), file("a/x"), dir("a/b"), file("a/b/y"), link("a/l", "b/y"), dir("empty")}},
		{name: "children before parents", entries: []Entry{file("a/b/y"), dir("a/b"), dir("a")}},
		{name: "missing parent", entries: []Entry{file("a/x")}, wantErr: ErrInvalidManifest},
		{name: "beneath a file", entries: []Entry{file("a"), file("a/x")}, wantErr: ErrInvalidManifest},
		{name: "beneath a link", entries: []Entry{link("a", "b"), dir("b"), file("a/x")}, wantErr: ErrInvalidManifest},
		{name: "duplicate", entries: []Entry{file("a"), dir("a")}, wantErr: ErrInvalidManifest},
		{name: "no kind", entries: []Entry{{Path: "a"}}, wantErr: ErrInvalidManifest},
		{name: "negative size", entries: []Entry{{Path: "a", Kind: KindFile, Size: -1}}, wantErr: ErrInvalidManifest},
		{name: "file with a link target", entries: []Entry{{Path: "a", Kind: KindFile, LinkTarget: "b"}}, wantErr: ErrInvalidManifest},
		{name: "traversal", entries: []Entry{file("../x")}, wantErr: ErrInvalidPath},
		{name: "escaping link", entries: []Entry{link("l", "../../etc/passwd")}, wantErr: ErrInvalidPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkManifest(tt.entries)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("checkManifest = %v; want %v", err, tt.wantErr)
			}
		})
	}
}

func TestAccountDir(t *testing.T) {
	dataDir := t.TempDir()
	dir, err := AccountDir(dataDir, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dataDir, "data", "acme"); dir != want {
		t.Errorf("AccountDir = %q; want %q", dir, want)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("account directory mode %v; want a 0700 directory", fi.Mode())
	}
	if again, err := AccountDir(dataDir, "acme"); err != nil || again != dir {
		t.Errorf("second AccountDir = %q, %v", again, err)
	}
	for _, bad := range []string{"", ".", "..", "../other", "a/b", ".hidden", "a\x00"} {
		if _, err := AccountDir(dataDir, bad); !errors.Is(err, ErrInvalidAccount) {
			t.Errorf("AccountDir(%q) = %v; want ErrInvalidAccount", bad, err)
		}
	}
	if _, err := AccountDir("relative", "acme"); err == nil {
		t.Error("AccountDir accepted a relative data directory")
	}
}
