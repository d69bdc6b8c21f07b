package dashboard

import "errors"

// ErrNoSession is a request without a live session: no cookie, an unknown
// or expired one, or one whose key has since been revoked.
var ErrNoSession = errors.New("dashboard: not logged in")

// ErrForbidden is a run or page the session's account may not see; it is
// answered exactly like a missing one.
var ErrForbidden = errors.New("dashboard: not found")
