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
	out, stderr, err := cliRun(t, runBenchObserver, "--days", "3", "--phones", "1", "--seed", "2")
	if err != nil {
		// The report says which check failed; a timing check can fail on
		// a machine too loaded to wake the server on the release grid.
		t.Fatalf("%v (stderr %q)\n%s", err, stderr, out)
	}
	for _, want := range []string{"untested", "negative", "positive", "exposed", "flushes: 144 on the schedule", "all checks passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, stderr, err = cliRun(t, runBenchObserver, "--days", "3", "--phones", "1", "--json")
	var rep observerbench.Report
	if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
		t.Fatalf("--json: %v, %v (stderr %q)\n%s", err, jerr, stderr, out)
	}
	if err != nil {
		t.Fatalf("--json: %v; failed checks: %q", err, rep.Failures)
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
