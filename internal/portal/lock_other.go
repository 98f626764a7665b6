//go:build !unix

package portal

import "context"

// lockFile does nothing where there is no flock: there, the portal and
// `conftrace authority users` must not change the users file at the same
// moment, or one of the two changes is lost (the file itself is always
// whole: it is replaced atomically).
func lockFile(context.Context, string) (func(), error) { return func() {}, nil }
