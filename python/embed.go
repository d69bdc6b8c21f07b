// Package python carries the atoll Python SDK inside the Go binary, so the
// server can put the in-worker runner (and the SDK, for nested calls and
// @cached) on every worker's path without installing anything into the
// user's environment. It only exposes and writes out the files.
package python

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SDK holds the atoll package: python files under "atoll/".
//
//go:embed atoll/*.py atoll/v1/*.py
var SDK embed.FS

// RuntimeLock is the requirements file, every version pinned and hashed,
// from which the server installs what workers need beside the SDK: the
// runner's cloudpickle, and gRPC for nested calls. It is resolved from
// runtime.in (the SDK's own dependencies in pyproject.toml) by
// scripts/lock.sh, so what workers run on changes only with a commit.
//
//go:embed runtime.lock
var RuntimeLock []byte

// RuntimeInput is runtime.in, the ranges RuntimeLock was resolved from.
//
//go:embed runtime.in
var RuntimeInput []byte

// WriteSDK writes the SDK under root, in a directory named for its content
// (so servers of different versions never share one), and returns that
// directory, ready to be put on a worker's sys.path. An existing complete
// copy is reused; a copy is written under a temporary name and renamed, so a
// half-written one is never used.
func WriteSDK(root string) (string, error) {
	sum := sha256.New()
	var files []string
	err := fs.WalkDir(SDK, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := SDK.ReadFile(path)
		if err != nil {
			return err
		}
		files = append(files, path)
		fmt.Fprintf(sum, "%s\x00%d\x00", path, len(data))
		sum.Write(data)
		return nil
	})
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "sdk-"+hex.EncodeToString(sum.Sum(nil))[:16])
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("write sdk: %w", err)
	}
	tmp, err := os.MkdirTemp(root, ".sdk-tmp-")
	if err != nil {
		return "", fmt.Errorf("write sdk: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, path := range files {
		data, _ := SDK.ReadFile(path)
		target := filepath.Join(tmp, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return "", fmt.Errorf("write sdk: %w", err)
		}
		if err := os.WriteFile(target, data, 0o644); err != nil {
			return "", fmt.Errorf("write sdk: %w", err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("write sdk: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, fs.ErrExist) {
		if _, statErr := os.Stat(dir); statErr != nil {
			return "", fmt.Errorf("write sdk: %w", err)
		}
	}
	return dir, nil
}
