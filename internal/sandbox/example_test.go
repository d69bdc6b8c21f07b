package sandbox_test

import (
	"context"
	"log/slog"
	"os"

	"github.com/atoll-dev/atoll/internal/sandbox"
	"github.com/atoll-dev/atoll/internal/scheduler"
)

// A server picks its launcher once at startup: the configured or detected
// OCI runtime, checked by running a trivial container, else plain
// processes with the warning shown in the log and in `atoll status`.
func Example() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	dataDir := "/var/lib/atoll"

	kind, warning, err := sandbox.Detect("auto") // or runc|crun|runsc|process from --sandbox
	if err != nil {
		logger.Error("bad sandbox setting", "error", err)
		return
	}
	var launcher scheduler.Launcher
	if kind != sandbox.KindProcess {
		oci, err := sandbox.NewOCI(sandbox.OCIOptions{
			Runtime:   kind,
			StateDir:  dataDir + "/sandbox",
			Protected: []string{dataDir},
			Logger:    logger,
		})
		if err == nil {
			err = oci.RemoveStale(context.Background())
		}
		if err == nil {
			err = oci.Check(context.Background())
		}
		if err == nil {
			launcher = oci
		} else {
			kind, warning = sandbox.KindProcess, "sandbox process: "+err.Error()+"; workers are NOT isolated"
		}
	}
	if launcher == nil {
		launcher = sandbox.NewProcess(sandbox.ProcessOptions{StateDir: dataDir + "/sandbox", Logger: logger})
	}
	if warning != "" {
		logger.Warn(warning, "sandbox", kind)
	}
	_ = launcher // handed to scheduler.New
}
