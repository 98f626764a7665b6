package main

import (
	"context"
	"errors"
)

// runDemo will run the whole system on a simulated population. Until the
// backend and the simulator land it says so and fails, so that nobody
// mistakes silence for a result.
func runDemo(ctx context.Context, cio cmdIO, args []string) error {
	return errors.New("the demo arrives with the backend and simulator (issues 3 and 4); today conftrace ships the protocol core: try \"conftrace enid derive --help\" or \"go test ./...\"")
}
