package main

import (
	"io"
	"os"
)

// benchSetup is what a bench command opens before it measures: the CPU
// profile file it was asked for and a scratch directory for the backend
// it starts. close removes and closes them.
type benchSetup struct {
	// Profile is the profile file, nil without --cpuprofile.
	Profile io.Writer
	// Dir is the scratch directory, "" when none was asked for.
	Dir     string
	closers []func()
}

// setUpBench creates the profile file named profile, if not empty, and a
// scratch directory named after dirPrefix, if not empty. On error it has
// left nothing behind.
func setUpBench(profile, dirPrefix string) (*benchSetup, error) {
	b := &benchSetup{}
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return nil, err
		}
		b.Profile = f
		b.closers = append(b.closers, func() { f.Close() })
	}
	if dirPrefix != "" {
		dir, err := os.MkdirTemp("", dirPrefix)
		if err != nil {
			b.close()
			return nil, err
		}
		b.Dir = dir
		b.closers = append(b.closers, func() { os.RemoveAll(dir) })
	}
	return b, nil
}

// close closes the profile and removes the scratch directory.
func (b *benchSetup) close() {
	for _, c := range b.closers {
		c()
	}
}
