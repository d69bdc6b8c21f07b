package storage_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"

	"github.com/atoll-dev/atoll/internal/storage"
)

// A sync as the Storage service runs it: plan, upload what the plan does
// not hold already, commit. The second sync of the same tree sends nothing.
func Example() {
	dataDir, _ := os.MkdirTemp("", "atoll-storage-example-")
	defer os.RemoveAll(dataDir)
	store, err := storage.New(storage.Options{DataDir: dataDir})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	content := []byte("hello, /data")
	sum := sha256.Sum256(content)
	entries := []storage.Entry{
		{Path: "docs", Kind: storage.KindDir, Mode: 0o755},
		{Path: "docs/hello.txt", Kind: storage.KindFile, Size: int64(len(content)), Mode: 0o644},
	}
	for range 2 {
		plan, err := store.Plan(ctx, "acme", "/data/project", entries)
		if err != nil {
			panic(err)
		}
		var send []int
		if stored, ok := plan.Stored[1]; !ok || string(stored) != string(sum[:]) {
			send = append(send, 1)
		}
		u, err := store.BeginUpload(ctx, "acme", plan.ID, send)
		if err != nil {
			panic(err)
		}
		if len(send) > 0 {
			u.Write(content)
			u.EndFile(sum[:])
		}
		res, err := u.Commit(ctx)
		u.Close()
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s: %d files written (%d bytes), %d unchanged\n", res.RemoteDir, res.FilesWritten, res.BytesWritten, res.FilesUnchanged)
	}
	dir, _ := storage.AccountDir(dataDir, "acme")
	data, _ := os.ReadFile(filepath.Join(dir, "project", "docs", "hello.txt"))
	fmt.Println(string(data))
	// Output:
	// /data/project: 1 files written (12 bytes), 0 unchanged
	// /data/project: 0 files written (0 bytes), 1 unchanged
	// hello, /data
}
