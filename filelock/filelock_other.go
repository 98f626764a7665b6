//go:build !unix

// Package filelock takes advisory locks on files, so that two processes
// that read, change and replace the same file (the portal's users file, a
// certificate verifier's record) do not lose each other's change.
package filelock

import "context"

// Supported reports whether Lock excludes other processes here.
const Supported = false

// Lock does nothing where there is no flock: there, two processes must
// not change the same file at the same moment, or one change is lost (the
// file itself stays whole when it is replaced atomically).
func Lock(context.Context, string) (func(), error) { return func() {}, nil }
