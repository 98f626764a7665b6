package observerbench_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/internal/observerbench"
	"github.com/conftrace/conftrace/policy"
)

// startLocal starts an in-process backend, as conftrace bench observer
// does.
func startLocal(ctx context.Context, dir string, pol policy.Policy, now func() time.Time) (*observerbench.Backend, error) {
	b, err := localbackend.Start(ctx, localbackend.Config{Dir: dir, Policy: &pol, Now: now})
	if err != nil {
		return nil, err
	}
	return &observerbench.Backend{
		URL: b.URL, Expectations: b.Expectations(), Authority: b.Authority,
		Maintain: b.Service.Maintain, FlushDue: b.Service.Enclave.FlushDue, Close: b.Close,
	}, nil
}

const days, phones = 3, 3

// The host, which sees every outer request and answer, their sizes and
// times, and every byte the backend writes and when, cannot tell untested,
// negative, positive (uploading) and exposed phones apart: one answer
// size, one request size per report length, the same exchange on the wire
// each day, no store write during any exchange, every answer on the
// release grid; while inside the TEE the positive phones' uploads became
// durable and the exposed phones were told, and the flushes wrote on
// their schedule whether or not anything had been uploaded.
func TestHostCannotTellGroupsApart(t *testing.T) {
	rep, err := observerbench.Run(t.Context(), observerbench.Config{Days: days, Phones: phones, Seed: 7, Dir: t.TempDir(), Start: startLocal})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := rep.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	for _, f := range rep.Failures {
		t.Error(f)
	}
	if t.Failed() {
		return
	}
	checksCatch(t, rep)
}

// checksCatch alters the records of a run that passed, one leak at a
// time, and requires the checks to name each.
func checksCatch(t *testing.T, rep *observerbench.Report) {
	first := func(r *observerbench.Report, ok func(x observerbench.Exchange) bool) *observerbench.Exchange {
		for i := range r.Exchanges {
			if ok(r.Exchanges[i]) {
				return &r.Exchanges[i]
			}
		}
		t.Fatal("no such exchange in the run")
		return nil
	}
	uploading := func(x observerbench.Exchange) bool { return x.Uploading }
	exposed := func(x observerbench.Exchange) bool { return x.Exposed }
	for _, tc := range []struct {
		name  string
		alter func(r *observerbench.Report)
		want  string
	}{
		{"an upload's answer is larger", func(r *observerbench.Report) { first(r, uploading).AnswerBytes += 16 }, "answers come in 2 sizes"},
		{"an upload's request is larger", func(r *observerbench.Report) { first(r, uploading).RequestBytes += 16 }, "requests with reports of"},
		{"an exposed phone's exchange makes another round trip", func(r *observerbench.Report) {
			x := first(r, exposed)
			x.Trips = append(x.Trips, x.Trips[len(x.Trips)-1])
		}, "look 2 ways on the wire"},
		{"an upload writes the store at once", func(r *observerbench.Report) {
			first(r, uploading).StoreChanged = []string{"data/conftrace.db-wal"}
		}, "positive: the store changed during 1 of"},
		{"an upload's answer leaves when ready", func(r *observerbench.Report) {
			first(r, uploading).OffsetMillis = observerbench.ReleaseMillis / 2
		}, "positive: 1 of"},
		{"a flush with nothing to write writes nothing", func(r *observerbench.Report) {
			for i := range r.Flushes {
				if r.Flushes[i].UploadsBefore == 0 {
					r.Flushes[i].Changed = nil
					return
				}
			}
		}, "wrote nothing"},
		{"a flush comes early", func(r *observerbench.Report) {
			r.EarlyWrites = append(r.EarlyWrites, r.Flushes[0])
		}, "asked a second before"},
		{"uploads never become durable", func(r *observerbench.Report) {
			for i := range r.Exchanges {
				r.Exchanges[i].Durable = false
			}
		}, "positive: phones told positive, negative, upload taken, upload durable, exposed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := clone(t, rep)
			tc.alter(r)
			fails := r.Recheck(days, phones, time.Duration(rep.ToleranceMillis*float64(time.Millisecond)))
			if !strings.Contains(strings.Join(fails, "\n"), tc.want) {
				t.Errorf("the checks do not say %q; they say %q", tc.want, fails)
			}
		})
	}
}

func clone(t *testing.T, r *observerbench.Report) *observerbench.Report {
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var c observerbench.Report
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}
