package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
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

// countFlag is a number of things given as an integer or in the form 1e8.
type countFlag int

func (c *countFlag) String() string { return strconv.Itoa(int(*c)) }

func (c *countFlag) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v > math.MaxInt32*4 || v != math.Trunc(v) {
		return fmt.Errorf("%q: want a whole number such as 20000 or 1e8", s)
	}
	*c = countFlag(v)
	return nil
}
