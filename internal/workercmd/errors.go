package workercmd

import "fmt"

// ExitError asks the caller to exit with Code, having printed nothing
// more: the agent reported why itself, upstream or on stderr.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }
