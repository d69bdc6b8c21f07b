package main

import (
	"fmt"
	"log/slog"
	"strings"

	"google.golang.org/grpc"

	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/sandbox"
	"github.com/atoll-dev/atoll/internal/server"
	"github.com/atoll-dev/atoll/internal/storage"
)

// registerStorage adds the Storage service (/data and sync_dir) to gs and
// returns the function that gives a worker its account's directory. In a
// sandbox, workers run as an unprivileged user, who must own that directory.
func registerStorage(gs *grpc.Server, dataDir, quota, launcherKind string, log *slog.Logger) (func(account string) (string, error), error) {
	quotaBytes, err := dataQuota(quota)
	if err != nil {
		return nil, err
	}
	var owner *storage.Owner
	var dirOpts []storage.DirOption
	if launcherKind != sandbox.KindProcess {
		owner = &storage.Owner{UID: sandbox.NobodyID, GID: sandbox.NobodyID}
		dirOpts = append(dirOpts, storage.WithOwner(owner.UID, owner.GID))
	}
	store, err := storage.New(storage.Options{DataDir: dataDir, QuotaBytes: quotaBytes, Owner: owner, Logger: log})
	if err != nil {
		return nil, err
	}
	log.Debug("storage ready", "quota_bytes", store.Quota())
	server.NewStorage(store, log).Register(gs)
	return func(account string) (string, error) {
		return storage.AccountDir(dataDir, account, dirOpts...)
	}, nil
}

// dataQuota parses --data-quota: bytes ("10GiB", "500MB", "1073741824");
// 0 means no limit.
func dataQuota(s string) (int64, error) {
	if strings.TrimSpace(s) == "" {
		return storage.DefaultQuotaBytes, nil
	}
	n, err := machine.ParseByteSize(s)
	if err != nil {
		return 0, fmt.Errorf("--data-quota %q: %w", s, err)
	}
	if n == 0 {
		return storage.NoQuota, nil
	}
	return int64(n), nil
}
