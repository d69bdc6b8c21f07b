package envbuild

import "time"

// logStep records at Debug how long one step of build name took since
// *since, and restarts the clock: `atoll envs build -v` shows where a
// build's time goes.
func (b *Builder) logStep(name, step string, since *time.Time) {
	now := time.Now()
	b.log.Debug("build step", "build", name, "step", step, "took", now.Sub(*since).Round(10*time.Microsecond))
	*since = now
}
