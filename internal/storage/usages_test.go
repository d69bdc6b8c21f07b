package storage

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestUsages(t *testing.T) {
	dataDir := t.TempDir()
	s, err := New(Options{DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	for account, size := range map[string]int{"alice": 300, "bob": 0} {
		dir, err := AccountDir(dataDir, account)
		if err != nil {
			t.Fatal(err)
		}
		if size > 0 {
			if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "sub", "f"), make([]byte, size), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := s.Usages()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int64{"alice": 300, "bob": 0}, got); diff != "" {
		t.Errorf("Usages() (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "data", "carol")); !os.IsNotExist(err) {
		t.Errorf("Usages created a directory: %v", err)
	}
}
