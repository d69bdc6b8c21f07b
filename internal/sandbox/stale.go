package sandbox

import "context"

// containerRuns reports whether the runtime has container id in a state
// where its processes may still run (created, running or paused), as
// opposed to stopped or gone.
func (l *OCILauncher) containerRuns(ctx context.Context, id string) bool {
	var status string
	err := l.runtimeDo(ctx, "state", func(ctx context.Context) error {
		st, err := l.rt.State(ctx, id)
		if err == nil {
			status = st.Status
		}
		return err
	})
	return err == nil && status != "stopped"
}
