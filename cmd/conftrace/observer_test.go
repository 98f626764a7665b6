package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/conftrace/conftrace/internal/observerbench"
)

// conftrace bench observer runs the groups through a local backend, says
// that the host's records are identical, and prints them whole as JSON.
func TestBenchObserver(t *testing.T) {
	out := mustRun(t, runBenchObserver, "--days", "3", "--phones", "1", "--seed", "2")
	for _, want := range []string{"untested", "negative", "positive", "exposed", "flushes: 144 on the schedule", "all checks passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out = mustRun(t, runBenchObserver, "--days", "3", "--phones", "1", "--json")
	var rep observerbench.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if len(rep.Exchanges) != 4*3 || len(rep.Groups) != 4 || rep.Failures == nil || len(rep.Failures) != 0 {
		t.Errorf("--json: %d exchanges, %d groups, failures %v; want 12, 4 and none", len(rep.Exchanges), len(rep.Groups), rep.Failures)
	}
}

func TestBenchObserverUsage(t *testing.T) {
	for _, args := range [][]string{{"--days", "2"}, {"--phones", "0"}, {"extra"}} {
		_, _, err := cliRun(t, runBenchObserver, args...)
		if !errors.As(err, new(usageError)) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}
