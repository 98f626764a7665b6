package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/policy"
)

// movableClock is a backend clock the test moves.
type movableClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *movableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *movableClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// conftrace stats reads what the backend released, through its public
// endpoint, as text and as JSON: nothing before a day closed, the day's
// noisy counts after.
func TestStatsCommand(t *testing.T) {
	pol := policy.Default()
	pol.Statistics = policy.NewStatistics(1000)
	pol.AnswerReleaseMillis = 0
	clock := &movableClock{now: time.Date(2026, 3, 10, 14, 0, 0, 0, time.UTC)}
	b, err := localbackend.Start(t.Context(), localbackend.Config{Dir: t.TempDir(), Policy: &pol, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	if out := mustRun(t, runStats, "--server", b.URL); !strings.Contains(out, "no day released yet") {
		t.Errorf("before a day closed: %q", out)
	}
	clock.set(time.Date(2026, 3, 11, 0, 1, 0, 0, time.UTC))
	if err := b.Service.Enclave.FlushDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	want, err := b.Service.Enclave.Statistics(t.Context())
	if err != nil || len(want.Days) != 1 {
		t.Fatalf("the enclave's statistics: %+v, %v", want, err)
	}
	got, err := api.ParseStatistics([]byte(mustRun(t, runStats, "--server", b.URL, "--json")))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("--json printed %+v, the enclave released %+v", got, want)
	}
	out := mustRun(t, runStats, "--server", b.URL+"/")
	for _, s := range []string{"2026-03-10*", api.CountChecks, api.CountExposed(1), "discrete_laplace, ε 1 per count per day", "sensitivity 1"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, api.CountGAENKeysImported) {
		t.Errorf("output shows a count the policy cannot produce:\n%s", out)
	}
}

// A backend whose policy releases no statistics says so; so does the
// command.
func TestStatsWithoutStatistics(t *testing.T) {
	b := newTestBackend(t)
	_, _, err := cliRun(t, runStats, "--server", b.url)
	if err == nil || !strings.Contains(err.Error(), "releases no statistics") {
		t.Errorf("err = %v, want that the backend releases no statistics", err)
	}
}

// Bad flags are usage errors; an answer that breaks the format's rules
// is refused, not printed.
func TestStatsRefusals(t *testing.T) {
	for _, args := range [][]string{{}, {"--server", "ftp://example.org"}, {"--server", "example.org"}, {"--server", "http://x", "extra"}} {
		var ue usageError
		if _, _, err := cliRun(t, runStats, args...); !errors.As(err, &ue) {
			t.Errorf("%q: err = %v, want a usage error", args, err)
		}
	}
	for name, body := range map[string]string{
		"not JSON":        "<html>",
		"days not sorted": `{"days":[{"date":"2026-03-11","mechanism":"discrete_laplace","epsilon":1,"releases":1,"partial":false,"counts":[]},{"date":"2026-03-10","mechanism":"discrete_laplace","epsilon":1,"releases":1,"partial":false,"counts":[]}]}`,
		"negative value":  `{"days":[{"date":"2026-03-10","mechanism":"discrete_laplace","epsilon":1,"releases":1,"partial":false,"counts":[{"name":"checks","value":-3,"sensitivity":1,"noise_std_dev":1.4}]}]}`,
		"unknown field":   `{"days":[],"raw":{"checks":7}}`,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != api.PathStatistics {
				http.NotFound(w, r)
				return
			}
			w.Write([]byte(body))
		}))
		out, _, err := cliRun(t, runStats, "--server", srv.URL)
		srv.Close()
		if err == nil || !strings.Contains(err.Error(), "statistics") {
			t.Errorf("%s: err = %v (output %q), want the answer refused", name, err, out)
		}
	}
}

// policy init --statistics-epsilon writes the statistics rule; without it
// the policy has none, and a value thousandths cannot hold is refused.
func TestPolicyInitStatisticsEpsilon(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "lab.key")
	mustRun(t, runAuthorityKeygen, "--out", key)
	read := func(file string) policy.Policy {
		t.Helper()
		doc, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		p, err := policy.Parse(doc)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	with := filepath.Join(dir, "with.json")
	mustRun(t, runPolicyInit, "--authority", "lab="+key+".pub", "--out", with, "--statistics-epsilon", "0.25")
	if got := read(with).Statistics; got != policy.NewStatistics(250) {
		t.Errorf("--statistics-epsilon 0.25 wrote %+v", got)
	}
	without := filepath.Join(dir, "without.json")
	mustRun(t, runPolicyInit, "--authority", "lab="+key+".pub", "--out", without)
	if got := read(without).Statistics; got.Enabled() {
		t.Errorf("without the flag the policy releases statistics: %+v", got)
	}
	for _, bad := range []string{"0", "0.0005", "11", "half"} {
		var ue usageError
		_, _, err := cliRun(t, runPolicyInit, "--authority", "lab="+key+".pub", "--out", filepath.Join(dir, "bad.json"), "--statistics-epsilon", bad)
		if !errors.As(err, &ue) {
			t.Errorf("--statistics-epsilon %s: err = %v, want a usage error", bad, err)
		}
	}
}
