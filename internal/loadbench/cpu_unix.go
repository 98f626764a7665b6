//go:build unix

package loadbench

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time this process has used, user and system:
// beside a phase's wall time it tells how much of the CPUs the phase got,
// which other processes on the machine can take.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
