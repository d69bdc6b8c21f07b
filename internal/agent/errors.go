package agent

import "errors"

// ErrUserSplitUnsupported is returned where the agent is asked to run the
// runner as another user on a system that cannot (not Linux).
var ErrUserSplitUnsupported = errors.New("running the runner as another user needs Linux")
