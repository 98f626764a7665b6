//go:build !unix

package loadbench

import "time"

// processCPU is unknown here: the figures that need it are left at 0.
func processCPU() time.Duration { return 0 }
