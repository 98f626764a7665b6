package population

import (
	mrand "math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/policy"
)

// phaseLab is a lab of one app user, offline, whose phone recorded a
// sighting on day 0 and took a positive test on day 0 whose result comes
// on day 1; its user always consents.
func phaseLab(t *testing.T) *lab {
	t.Helper()
	pol := policy.Default()
	clock := &simClock{start: DefaultStart(), pol: pol, now: new(atomic.Int64)}
	clock.now.Store(DefaultStart().UnixNano())
	people := []person{{app: true, phone: newPhone(0, 10)}}
	people[0].phone.log[0] = []rec{{s: contactlog.Sighting{Interval: enid.IntervalOf(clock.at(0, 600)), Minutes: 5, Attenuation: 50}}}
	people[0].lab.pending = []test{{day: 0, resultDay: 1, positive: true, secret: make([]byte, api.TestSecretSize)}}
	return &lab{
		rng: mrand.New(mrand.NewPCG(1, 2)), people: people, clock: clock, consent: 1,
		sum:    &Summary{Daily: make([]Day, 10)},
		radio:  &radio{clock: clock, keys: map[[2]int]*enid.Key{}},
		oracle: newOracle(pol, clock, people),
	}
}

// exchangeAt returns an exchange of day d at checkMinute whose poll the
// backend answered res.
func exchangeAt(l *lab, d int, res *api.PollResultResponse) exchanged {
	at := l.clock.at(d, checkMinute)
	return exchanged{resp: api.ExchangeResponse{Result: res}, at: at, took: at}
}

// step plans device 0's exchange of day d, checks that it polls and
// uploads as want says, and answers it with res (and up, for an upload).
func step(t *testing.T, l *lab, d int, want plan, res *api.PollResultResponse, up *api.UploadResponse) {
	t.Helper()
	pl := l.plan(0, d)
	if pl != want {
		t.Fatalf("day %d: the phone's exchange carries %+v, want %+v", d, pl, want)
	}
	x := exchangeAt(l, d, res)
	x.resp.Upload = up
	if pl.upload {
		if err := l.tookUpload(0, d, pl, x); err != nil {
			t.Fatal(err)
		}
	}
	l.answered(0, pl, x)
}

var (
	pending  = &api.PollResultResponse{Result: api.Pending}
	positive = &api.PollResultResponse{Result: api.Positive, UploadAuthorization: make([]byte, api.AuthorizationSize)}
	waiting  = &api.PollResultResponse{Result: api.Positive, UploadPending: true}
	done     = &api.PollResultResponse{Result: api.Positive, Uploaded: true}
	polls    = plan{test: 0}
	uploads  = plan{test: 0, upload: true}
	idle     = plan{test: -1}
	// took is the backend's acknowledgement of the phone's upload: its
	// sighting and its keys of days 0 to 2.
	took = &api.UploadResponse{Sightings: 1, Keys: 3}
)

// TestPhonePhases follows a phone through its test: it polls while the
// result is pending, learns the positive result in the exchange of the day
// it is signed, uploads in its next day's exchange under the polled
// result, and polls until the backend says the upload is durable; one not
// durable two days on, a wrong result and a refused upload are mismatches.
func TestPhonePhases(t *testing.T) {
	t.Run("durable", func(t *testing.T) {
		l := phaseLab(t)
		step(t, l, 0, polls, pending, nil)
		l.people[0].lab.pending[0].submitted = true
		step(t, l, 1, polls, positive, nil)
		step(t, l, 2, uploads, waiting, took)
		if !l.people[0].phone.upload.done || l.sum.Uploads != 1 || l.sum.Daily[2].Uploads != 1 || len(l.oracle.ledger.recip) != 1 {
			t.Fatalf("the upload was not recorded: %+v, %d uploads, %d uploaded sightings", l.people[0].phone.upload, l.sum.Uploads, len(l.oracle.ledger.recip))
		}
		step(t, l, 3, polls, waiting, nil)
		step(t, l, 4, polls, done, nil)
		step(t, l, 5, idle, nil, nil)
		if l.sum.UploadsDurable != 1 || l.sum.ExchangeMismatches != 0 {
			t.Fatalf("%d uploads durable, %d mismatches; want 1 and 0", l.sum.UploadsDurable, l.sum.ExchangeMismatches)
		}
	})
	t.Run("pending two days on", func(t *testing.T) {
		l := phaseLab(t)
		l.people[0].lab.pending[0].submitted = true
		step(t, l, 1, polls, positive, nil)
		step(t, l, 2, uploads, waiting, took)
		step(t, l, 3, polls, waiting, nil)
		step(t, l, 4, polls, waiting, nil)
		step(t, l, 5, idle, nil, nil)
		if l.sum.UploadsDurable != 0 || l.sum.ExchangeMismatches != 1 {
			t.Fatalf("%d uploads durable, %d mismatches; want 0 and 1", l.sum.UploadsDurable, l.sum.ExchangeMismatches)
		}
	})
	for _, tc := range []struct {
		name     string
		res      *api.PollResultResponse
		up       *api.UploadResponse
		uploaded bool
	}{
		{"lost", &api.PollResultResponse{Result: api.Positive, UploadAuthorization: make([]byte, api.AuthorizationSize)}, took, true},
		{"refused", positive, nil, false},
		{"taken in part", waiting, &api.UploadResponse{Sightings: 0, Keys: 3}, true},
		{"no poll answer", nil, took, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := phaseLab(t)
			l.people[0].lab.pending[0].submitted = true
			step(t, l, 1, polls, positive, nil)
			step(t, l, 2, uploads, tc.res, tc.up)
			if l.sum.ExchangeMismatches == 0 || l.people[0].phone.upload.done != tc.uploaded {
				t.Fatalf("%d mismatches, upload recorded %v; want a mismatch, and the upload recorded only if taken", l.sum.ExchangeMismatches, l.people[0].phone.upload.done)
			}
		})
	}
	for _, tc := range []struct {
		name      string
		submitted bool
		res       *api.PollResultResponse
	}{
		{"positive before it was signed", false, positive},
		{"pending once signed", true, pending},
		{"negative for a positive test", true, &api.PollResultResponse{Result: api.Negative}},
		{"positive without an authorization", true, &api.PollResultResponse{Result: api.Positive}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := phaseLab(t)
			l.people[0].lab.pending[0].submitted = tc.submitted
			step(t, l, 1, polls, tc.res, nil)
			step(t, l, 2, idle, nil, nil)
			if l.sum.ExchangeMismatches != 1 {
				t.Fatalf("%d mismatches, want 1", l.sum.ExchangeMismatches)
			}
		})
	}
}

// TestPhoneWithNothingToShare checks that a phone whose user consented
// but that recorded no sighting in the window does not upload when
// uploaded keys match nothing by themselves, and does with a policy that
// matches them one-sided.
func TestPhoneWithNothingToShare(t *testing.T) {
	for _, oneSided := range []bool{false, true} {
		l := phaseLab(t)
		if oneSided {
			l.oracle.ledger.pol.Matching = []string{policy.MatchReciprocal, policy.MatchOneSided}
		}
		l.people[0].phone.log[0] = nil
		l.people[0].lab.pending[0].submitted = true
		step(t, l, 1, polls, positive, nil)
		want := idle
		if oneSided {
			want = uploads
		}
		if pl := l.plan(0, 2); pl != want {
			t.Fatalf("one-sided %v: the exchange carries %+v, want %+v", oneSided, pl, want)
		}
	}
}
