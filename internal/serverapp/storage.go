package serverapp

import (
	"github.com/atoll-dev/atoll/internal/sandbox"
	"github.com/atoll-dev/atoll/internal/server"
	"github.com/atoll-dev/atoll/internal/storage"
)

// registerStorage adds the Storage service (/data and sync_dir) and returns
// the function that gives a worker its account's directory. In a sandbox,
// workers run as an unprivileged user, who must own that directory.
func (a *app) registerStorage() (func(account string) (string, error), error) {
	log := a.log.With("component", "storage")
	var owner *storage.Owner
	var dirOpts []storage.DirOption
	if a.launcher.Kind != sandbox.KindProcess {
		owner = &storage.Owner{UID: sandbox.NobodyID, GID: sandbox.NobodyID}
		dirOpts = append(dirOpts, storage.WithOwner(owner.UID, owner.GID))
	}
	volumes, err := a.openVolumes(owner, log)
	if err != nil {
		return nil, err
	}
	store, err := storage.New(storage.Options{DataDir: a.dataDir, QuotaBytes: a.cfg.DataQuota, Owner: owner, Logger: log, Volumes: volumes})
	if err != nil {
		return nil, err
	}
	log.Debug("storage ready", "quota_bytes", store.Quota())
	a.dataStore = store
	server.NewStorage(store, log).Register(a.gs)
	dataDir := a.dataDir
	return func(account string) (string, error) {
		if volumes != nil {
			if err := volumes.Ensure(account); err != nil {
				return "", err
			}
		}
		return storage.AccountDir(dataDir, account, dirOpts...)
	}, nil
}
