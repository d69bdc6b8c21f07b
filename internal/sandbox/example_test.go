package sandbox_test

import (
	"context"
	"log/slog"
	"os"

	"github.com/atoll-dev/atoll/internal/sandbox"
	"github.com/atoll-dev/atoll/internal/scheduler"
)

// A server picks how workers run on its host once at startup: the
// configured or detected OCI runtime, checked by running a trivial
// container, else plain processes with the warning shown in the log and in
// `atoll status`. The local launcher puts it to work for the scheduler.
func Example() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	dataDir := "/var/lib/atoll"

	kind, warning, err := sandbox.Detect("auto") // or runc|crun|runsc|process from --sandbox
	if err != nil {
		logger.Error("bad sandbox setting", "error", err)
		return
	}
	var host sandbox.HostLauncher
	if kind != sandbox.KindProcess {
		oci, err := sandbox.NewOCI(sandbox.OCIOptions{
			Runtime:   kind,
			StateDir:  dataDir + "/sandbox",
			Protected: []string{dataDir},
			Logger:    logger,
		})
		if err == nil {
			defer oci.Close() // once its workers are gone
			err = oci.RemoveStale(context.Background())
		}
		if err == nil {
			err = oci.Check(context.Background())
		}
		if err == nil {
			host = oci
		} else {
			kind, warning = sandbox.KindProcess, "sandbox process: "+err.Error()+"; workers are NOT isolated"
		}
	}
	if host == nil {
		host = sandbox.NewProcess(sandbox.ProcessOptions{StateDir: dataDir + "/sandbox", Logger: logger})
	}
	if warning != "" {
		logger.Warn(warning, "sandbox", kind)
	}
	launcher, err := sandbox.NewLocal(sandbox.LocalOptions{
		Host:         host,
		Environments: sandbox.EnvbuildResolver{Builder: nil}, // the server's environment builder
		AgentPath:    "/usr/local/bin/atoll",
		SDKDir:       dataDir + "/runtime",
		Logger:       logger,
	})
	if err != nil {
		logger.Error("local launcher", "error", err)
		return
	}
	var _ scheduler.Launcher = launcher // handed to scheduler.New
}
