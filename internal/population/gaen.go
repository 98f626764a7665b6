package population

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gaen"
	"github.com/conftrace/conftrace/policy"
)

// GAEN-only phones (Config.GAENShare) belong to people who run another
// country's Exposure Notification app instead of this one. Their phones
// broadcast identifiers from daily keys like everyone's, and the phones of
// app users they meet record sightings of them with the same Bluetooth
// model; they never check with conftrace. When one of them tests positive
// (the same tests as everyone) and consents (Config.Consent), their app
// sends the keys of their infectious window (from two days before symptom
// onset, or the test without symptoms, to the result) to its own key
// server. The simulator plays that server: once a simulated day, after the
// day's results, it signs an export of the keys it received that day with
// Config.GAENExportKey and sends it to the backend's import endpoint, as
// an importer (conftrace gaen import) would. The backend matches those
// keys one-sided, and the oracle adds exactly the keys the backend takes.
//
// Who runs a GAEN app, what app phones hear of them and who consents are
// drawn from a generator of their own, so that the rest of a run (people,
// encounters, infections, tests, app users' consent) draws exactly what it
// draws without GAEN-only phones.

// gaenStream selects the stream of the GAEN generator ("gaenonly").
const gaenStream = 0x6761656e6f6e6c79

// The foreign key server's labels. The backend tries every signature
// against every key its policy lists, so they are informative only.
const (
	gaenRegion     = "ZZ" // a user-assigned ISO 3166 code: no real country
	gaenKeyID      = "999"
	gaenKeyVersion = "v1"
)

// gaenCase is what the simulator knows of a GAEN-only person's shared
// keys; the zero value means none.
type gaenCase struct {
	// done is set once the keys were exported to the backend.
	done bool
	// testDay is the day of the positive test; from and to the days of
	// the keys shared.
	testDay, from, to int
}

// gaenServer is the foreign GAEN key server of the GAEN-only people.
type gaenServer struct {
	rng     *mrand.Rand // the GAEN generator
	people  []person
	radio   *radio
	clock   *simClock
	backend *client.Client
	oracle  *oracle
	sum     *Summary
	signer  *ecdsa.PrivateKey // Config.GAENExportKey
	consent float64           // Config.Consent
	// pending are the people whose keys the server received today.
	pending []int
}

// assignGAEN draws who, of the people without the app, runs a GAEN app,
// with probability share, from the GAEN generator, and returns how many.
func assignGAEN(rng *mrand.Rand, people []person, share float64) int {
	n := 0
	if share <= 0 {
		return 0
	}
	for i := range people {
		if !people[i].app && rng.Float64() < share {
			people[i].gaen = true
			n++
		}
	}
	return n
}

// consider has GAEN-only person i, who learnt the result of test t today,
// share their keys if it is positive, they have not shared yet, and they
// consent.
func (g *gaenServer) consider(i int, t test) {
	p := &g.people[i]
	if !p.gaen || !t.positive || p.shared.done || g.rng.Float64() >= g.consent {
		return
	}
	from := t.day - 2
	if p.disease.symptomatic && p.disease.onset <= t.day {
		from = p.disease.onset - 2
	}
	p.shared = gaenCase{testDay: t.day, from: from, to: t.resultDay}
	g.pending = append(g.pending, i)
}

// publish has the server sign an export of the keys it received on day d
// and import it into the backend, and tells the oracle which keys the
// backend must have taken.
func (g *gaenServer) publish(ctx context.Context, d int) error {
	if len(g.pending) == 0 {
		return nil
	}
	exp := &gaen.Export{Region: gaenRegion, Start: g.clock.at(d, 0), End: g.clock.at(d, importMinute)}
	var keys [][]contactlog.DailyKey // by pending case
	for _, i := range g.pending {
		ks, err := g.radio.dailyKeys(i, g.people[i].shared.from, g.people[i].shared.to)
		if err != nil {
			return err
		}
		keys = append(keys, ks)
		for _, k := range ks {
			exp.Keys = append(exp.Keys, gaen.Key{TEK: k.TEK, RollingStart: k.Start, RollingPeriod: int(k.Period), ReportType: gaen.ConfirmedTest})
		}
	}
	zip, err := gaen.Write(exp, gaen.SigningKey{KeyID: gaenKeyID, KeyVersion: gaenKeyVersion, Key: g.signer})
	if err != nil {
		return fmt.Errorf("population: day %d: writing a GAEN export: %w", d, err)
	}
	before, err := g.clock.advance(ctx, d, importMinute)
	if err != nil {
		return err
	}
	resp, err := g.backend.ImportGAEN(ctx, zip)
	if err != nil {
		return fmt.Errorf("population: day %d: importing a GAEN export: %w", d, err)
	}
	at := g.clock.current()
	g.record(resp, keys, before, at)
	return nil
}

// record counts an import that the backend answered with resp, sent at
// before and answered by at, and tells the oracle the keys it took.
func (g *gaenServer) record(resp api.ImportResponse, keys [][]contactlog.DailyKey, before, at time.Time) {
	s := g.sum
	s.Requests++
	s.GAENExports++
	s.GAENKeysImported += resp.Imported
	want, total := 0, 0
	for j, i := range g.pending {
		p := &g.people[i]
		p.shared.done = true
		took := importable(g.clock.pol, keys[j], at)
		g.oracle.imported(i, took, at)
		want += len(took)
		total += len(keys[j])
	}
	s.GAENCases += len(g.pending)
	s.GAENKeysPublished += total
	// A live backend's window may have moved while the import was under
	// way; then either window's count is right.
	alt := want
	if g.clock.live && !g.clock.sameWindow(before, at) {
		alt = 0
		for j := range g.pending {
			alt += len(importable(g.clock.pol, keys[j], before))
		}
	}
	if resp.Duplicate || (resp.Imported != want && resp.Imported != alt) || resp.Imported+resp.Skipped != total {
		s.GAENImportMismatches++
	}
	g.pending = g.pending[:0]
}

// importable returns the keys of ks that the protocol has a backend with
// policy pol import at now: valid rolling period, starting no later than
// the interval after now's (clock skew), and valid on a day of the
// retention window.
func importable(pol policy.Policy, ks []contactlog.DailyKey, now time.Time) []contactlog.DailyKey {
	first := enid.IntervalOf(pol.WindowStart(now))
	latest := enid.IntervalOf(now) + 1
	var took []contactlog.DailyKey
	for _, k := range ks {
		if k.Period >= 1 && int(k.Period) <= enid.RollingPeriod && k.Start <= latest && k.End() > first {
			took = append(took, k)
		}
	}
	return took
}
