package serverapp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecondServerOnADataDirFailsNamingTheFirst(t *testing.T) {
	dir := t.TempDir()
	first := &app{cfg: Config{DataDir: dir}}
	if err := first.lockDataDir(context.Background()); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "untouched")
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	second := &app{cfg: Config{DataDir: dir}}
	err := second.lockDataDir(context.Background())
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second lock: %v; want ErrDataDirInUse naming pid %d", err, os.Getpid())
	}
	if len(second.undo) != 0 {
		t.Error("the refused server left something to undo")
	}
	first.close()
	third := &app{cfg: Config{DataDir: dir}}
	if err := third.lockDataDir(context.Background()); err != nil {
		t.Fatalf("after the first released it: %v", err)
	}
	third.close()
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the data directory was changed: %v", err)
	}
}
