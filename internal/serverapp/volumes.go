package serverapp

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/atoll-dev/atoll/internal/storage"
)

// openVolumes decides how accounts' /data is kept (--data-volumes): loop
// volumes, whose size is the quota, where the host allows them; plain
// directories, where the quota binds only sync_dir, where asked or (under
// auto) where it does not, with a warning. No quota needs no volumes.
func (a *app) openVolumes(owner *storage.Owner, log *slog.Logger) (*storage.LoopVolumes, error) {
	mode := a.cfg.DataVolumes
	if mode == "" {
		mode = storage.VolumesAuto
	}
	switch mode {
	case storage.VolumesDirectory:
		return nil, nil
	case storage.VolumesAuto, storage.VolumesLoop:
	default:
		return nil, fmt.Errorf("--data-volumes %q: want %s, %s or %s", mode, storage.VolumesAuto, storage.VolumesLoop, storage.VolumesDirectory)
	}
	if a.cfg.DataQuota <= 0 {
		return nil, nil
	}
	volumes, err := storage.NewLoopVolumes(a.dataDir, a.cfg.DataQuota, owner, log)
	if errors.Is(err, storage.ErrVolumesUnavailable) && mode == storage.VolumesAuto {
		log.Warn("accounts' /data are plain directories: the quota binds sync_dir only, and functions can write past it", "reason", err.Error())
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--data-volumes %s: %w (or pass --data-volumes directory)", mode, err)
	}
	a.undo = append(a.undo, func() {
		if err := volumes.Close(); err != nil {
			log.Warn("unmount volumes", "err", err)
		}
	})
	return volumes, nil
}
