package enclave

// Public statistics: what is counted, that a day is released once, when
// it closes, with the policy's noise, and that nothing but the noisy
// release leaves the enclave (docs/statistics.md).

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/gaen"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

// withStatistics is a policy edit that releases statistics at ε = 0.5.
func withStatistics(p *policy.Policy) { p.Statistics = policy.NewStatistics(500) }

// rawCounts returns this run's raw counts of day d, in enclave memory.
func (v *env) rawCounts(d calendar.Day) dayCounts {
	s := v.e.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.days[d]; c != nil {
		return *c
	}
	return dayCounts{}
}

// seedStatistics makes the enclave's noise a seeded stream.
func (v *env) seedStatistics(seed byte) {
	s := v.e.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	s.random = *seeded(seed)
}

// closeDay moves the clock to half a minute after the next UTC midnight
// and makes the flushes then due.
func (v *env) closeDay() {
	v.t.Helper()
	next := (utcDay(v.now()) + 1).Time().Add(30 * time.Second)
	v.flushDue(next.Sub(v.now()))
}

// openRelease opens a stored release as the enclave does.
func (v *env) openRelease(r store.Record) release {
	v.t.Helper()
	day, run, ok := parseStatsKey(r.Key)
	if !ok {
		v.t.Fatalf("release key %x", r.Key)
	}
	plain, err := v.e.OpenSecret(statsName(day, run), r.Value)
	if err != nil {
		v.t.Fatal(err)
	}
	rel, err := decodeRelease(day, plain)
	if err != nil {
		v.t.Fatal(err)
	}
	return rel
}

// statisticsOf returns the enclave's public answer.
func (v *env) statisticsOf(e *Enclave) api.Statistics {
	v.t.Helper()
	st, err := e.Statistics(v.t.Context())
	if err != nil {
		v.t.Fatalf("Statistics: %v", err)
	}
	if err := st.Validate(); err != nil {
		v.t.Fatalf("the answer breaks its own rules: %v", err)
	}
	return st
}

// stranger returns the report of a phone that met nobody, with today's key.
func (v *env) stranger() contactlog.Report {
	d := newDevice()
	d.key(enid.IntervalOf(v.now()))
	return d.report()
}

// exposing returns both sides of an encounter at at that exposes the
// contact (20 minutes, close): the report the infected phone uploads and
// the contact's.
func exposing(at time.Time) (infected, contact contactlog.Report) {
	a, b := newDevice(), newDevice()
	ab1, ba1 := meet(a, b, at, 10, 50)
	ab2, ba2 := meet(a, b, at.Add(10*time.Minute), 10, 50)
	return a.report(ab1, ab2), b.report(ba1, ba2)
}

// The counts' indexes name what the public answer calls them.
func TestStatisticsCountNames(t *testing.T) {
	names := api.StatisticsCountNames()
	if len(names) != statCounts {
		t.Fatalf("%d names for %d counts", len(names), statCounts)
	}
	for i, want := range map[int]string{statResults: api.CountResultsSubmitted, statUploads: api.CountUploads, statChecks: api.CountChecks,
		statExposed: api.CountExposed(1), statExposed + 2: api.CountExposed(3), statGPS: api.CountGPSMatches, statGAEN: api.CountGAENKeysImported} {
		if names[i] != want {
			t.Errorf("count %d is named %q, want %q", i, names[i], want)
		}
	}
}

// Without statistics in the policy nothing is counted, released or
// served.
func TestStatisticsOffWithoutPolicy(t *testing.T) {
	v := newEnv(t)
	if v.e.stats != nil {
		t.Fatal("counting without statistics in the policy")
	}
	if _, err := v.exchange(0, nil, nil, v.stranger()); err != nil {
		t.Fatal(err)
	}
	v.closeDay()
	if rs := v.records(tableStats); len(rs) != 0 {
		t.Errorf("%d releases stored without statistics in the policy", len(rs))
	}
	_, err := v.e.Statistics(t.Context())
	wantCode(t, "Statistics", err, api.CodeNotFound)
}

// What each flow counts: results stored, exchanges (checks, and uploads
// they take), a phone's exposure once a day however often it checks, GPS
// matches; refusals count nothing.
func TestStatisticsCounts(t *testing.T) {
	v := newEnv(t, withStatistics)
	today := utcDay(v.now())
	infected, contact := exposing(v.now().Add(-2 * time.Hour))
	other, otherContact := exposing(v.now().Add(-3 * time.Hour))
	v.mustUpload(other) // directly, not by an exchange: the backend serves only exchanges
	secret := newSecret()
	v.submit(secret, api.Positive)
	v.submit(newSecret(), api.Negative)
	if _, err := v.e.SubmitResult(t.Context(), v.signResult(secret, api.Positive)); err == nil {
		t.Fatal("a result submitted twice was stored")
	}
	if resp, err := v.exchange(api.ExchangePoll|api.ExchangeUpload, secret, nil, infected); err != nil || resp.Upload == nil {
		t.Fatalf("upload by exchange: %+v, %v", resp, err)
	}
	for range 3 {
		if resp, err := v.exchange(0, nil, nil, contact); err != nil || !resp.Exposure.Exposed {
			t.Fatalf("contact's exchange: %+v, %v", resp, err)
		}
	}
	if resp, err := v.exchange(0, nil, nil, otherContact); err != nil || !resp.Exposure.Exposed {
		t.Fatalf("other contact's exchange: %+v, %v", resp, err)
	}
	if _, err := v.exchange(0, nil, nil, v.stranger()); err != nil {
		t.Fatal(err)
	}
	if _, err := v.e.Exchange(t.Context(), api.ExchangeRequest{Report: []byte{0xff}}); err == nil {
		t.Fatal("a malformed exchange was answered")
	}
	patient := walk(v.now().Add(-3*time.Hour), 30, 52.52, 13.40, 0.0001)
	v.submitTrace(patient)
	if !v.checkTrace(patient).Exposed {
		t.Fatal("a trace on the patient's is not exposed")
	}
	v.checkTrace(walk(v.now().Add(-3*time.Hour), 30, 48.85, 2.35, 0.0001))

	// 3 results (mustUpload's too), 1 upload by exchange, 6 exchanges,
	// 2 phones exposed at order 1, 1 GPS match.
	want := dayCounts{statResults: 3, statUploads: 1, statChecks: 6, statExposed: 2, statGPS: 1}
	if got := v.rawCounts(today); got != want {
		t.Errorf("counts %v, want %v", got, want)
	}
	// The next day, the contact counts again, once.
	v.clock.Advance(24 * time.Hour)
	for range 2 {
		if resp, err := v.exchange(0, nil, nil, contact); err != nil || !resp.Exposure.Exposed {
			t.Fatalf("contact's exchange the next day: %+v, %v", resp, err)
		}
	}
	if got, want := v.rawCounts(today+1), (dayCounts{statChecks: 2, statExposed: 1}); got != want {
		t.Errorf("the next day's counts %v, want %v", got, want)
	}
}

// Imported GAEN keys count by the key, with the policy's MaxKeys as
// sensitivity.
func TestStatisticsCountsImportedKeys(t *testing.T) {
	srv, listKey := newGAENServer(t)
	v := newEnv(t, withStatistics, listKey)
	k1, _ := gaenKey(enid.IntervalOf(v.now().Add(-24 * time.Hour)))
	k2, _ := gaenKey(enid.IntervalOf(v.now().Add(-48 * time.Hour)))
	if _, err := v.e.ImportGAEN(t.Context(), api.ImportRequest{Export: srv.export([]gaen.Key{k1, k2})}); err != nil {
		t.Fatal(err)
	}
	if got := v.rawCounts(utcDay(v.now()))[statGAEN]; got != 2 {
		t.Errorf("imported keys counted %d, want 2", got)
	}
	if got := v.e.stats.sens[statGAEN]; got != v.pol.MaxKeys() {
		t.Errorf("GAEN keys' sensitivity %d, want the policy's MaxKeys %d", got, v.pol.MaxKeys())
	}
}

// A day is released once, when it closes, by the flush clock: the same
// noisy values for every query, after more flushes, and after a restart.
// The raw counts are gone from memory once released.
func TestStatisticsReleasedOnceADay(t *testing.T) {
	v := newEnv(t, withStatistics)
	today := utcDay(v.now())
	for range 5 {
		if _, err := v.exchange(0, nil, nil, v.stranger()); err != nil {
			t.Fatal(err)
		}
	}
	v.flushDue(time.Hour)
	if st := v.statisticsOf(v.e); len(st.Days) != 0 {
		t.Fatalf("released before the day closed: %+v", st)
	}
	if rs := v.records(tableStats); len(rs) != 0 {
		t.Fatalf("%d releases stored before the day closed", len(rs))
	}
	v.closeDay()
	rows := v.records(tableStats)
	if len(rows) != 1 || !bytes.Equal(rows[0].Key, statsKey(today, v.e.heads.id)) || rows[0].Day != store.NoDay {
		t.Fatalf("stored releases %v, want one, of today and this run, of no day", rows)
	}
	v.e.stats.mu.Lock()
	_, kept := v.e.stats.days[today]
	v.e.stats.mu.Unlock()
	if kept {
		t.Error("the released day's raw counts are still in memory")
	}
	rel := v.openRelease(rows[0])
	first := v.statisticsOf(v.e)
	if len(first.Days) != 1 {
		t.Fatalf("answer %+v, want one day", first)
	}
	d := first.Days[0]
	wantNames := []string{api.CountResultsSubmitted, api.CountUploads, api.CountChecks, api.CountExposed(1), api.CountGPSMatches}
	var names []string
	for _, c := range d.Counts {
		names = append(names, c.Name)
		i := slices.Index(api.StatisticsCountNames(), c.Name)
		if c.Value != max(rel.values[i], 0) || c.Sensitivity != 1 || c.NoiseStdDev != math.Sqrt(noiseVariance(500, 1)) {
			t.Errorf("count %+v, want the stored release's %d (at least 0), sensitivity 1", c, rel.values[i])
		}
	}
	if d.Date != today.String() || d.Releases != 1 || !d.Partial || d.Epsilon != 0.5 || d.Mechanism != policy.MechanismDiscreteLaplace || !slices.Equal(names, wantNames) {
		t.Errorf("day %+v, want %s, one partial release at ε 0.5 of %v", d, today, wantNames)
	}
	if rel.from != v.e.stats.start.Unix()-today.Unix() || rel.from <= 0 {
		t.Errorf("release counted from second %d of its day, want when the run started", rel.from)
	}
	for range 3 {
		if again := v.statisticsOf(v.e); !reflect.DeepEqual(again, first) {
			t.Fatalf("a second query answered %+v, the first %+v", again, first)
		}
	}
	v.flushDue(time.Hour)
	v.flushDue(time.Hour)
	if !sameRecords(v.records(tableStats), rows) {
		t.Error("later flushes changed the stored release")
	}
	v.restart()
	if again := v.statisticsOf(v.e); !reflect.DeepEqual(again, first) {
		t.Errorf("after a restart %+v, before %+v", again, first)
	}
	// The new run releases the next day, its own row; the first stands.
	v.closeDay()
	after := v.statisticsOf(v.e)
	if len(after.Days) != 2 || !reflect.DeepEqual(after.Days[0], first.Days[0]) || after.Days[1].Date != (today+1).String() || !after.Days[1].Partial {
		t.Errorf("after the next day closed: %+v", after)
	}
}

// The released values carry the policy's noise: over many days of the
// same raw counts, the noise of each count has mean 0 and the variance of
// its sensitivity (1 for checks, MaxKeys for imported GAEN keys), and the
// answer states its standard deviation.
func TestStatisticsNoiseAsThePolicySays(t *testing.T) {
	_, listKey := newGAENServer(t)
	v := newEnv(t, withStatistics, listKey)
	v.seedStatistics(1)
	const days, raw = 300, 100_000
	for range days {
		v.e.stats.add(statChecks, raw)
		v.e.stats.add(statGAEN, raw)
		v.clock.Advance(24 * time.Hour)
		v.e.releaseStatistics(t.Context())
	}
	st := v.statisticsOf(v.e)
	if len(st.Days) != days {
		t.Fatalf("%d days released, want %d", len(st.Days), days)
	}
	for _, c := range []struct {
		name  string
		delta int
	}{{api.CountChecks, 1}, {api.CountGAENKeysImported, v.pol.MaxKeys()}} {
		variance := noiseVariance(500, c.delta)
		noise := make([]float64, days)
		zeros := 0
		for i, d := range st.Days {
			j := slices.IndexFunc(d.Counts, func(n api.NoisyCount) bool { return n.Name == c.name })
			if j < 0 {
				t.Fatalf("day %s has no %s", d.Date, c.name)
			}
			n := d.Counts[j]
			if n.Sensitivity != c.delta || math.Abs(n.NoiseStdDev-math.Sqrt(variance)) > 1e-9 {
				t.Errorf("%s on %s: sensitivity %d, noise deviation %.3f; want %d, %.3f", c.name, d.Date, n.Sensitivity, n.NoiseStdDev, c.delta, math.Sqrt(variance))
			}
			noise[i] = float64(n.Value - raw)
			if n.Value == raw {
				zeros++
			}
		}
		mean, m2 := 0.0, 0.0
		for _, z := range noise {
			mean += z
		}
		mean /= days
		for _, z := range noise {
			m2 += (z - mean) * (z - mean)
		}
		m2 /= days - 1
		t.Logf("%s: noise mean %.2f, variance %.1f (want %.1f), %d of %d days without noise", c.name, mean, m2, variance, zeros, days)
		if se := math.Sqrt(variance / days); math.Abs(mean) > 5*se {
			t.Errorf("%s: noise mean %.2f, want 0 within %.2f", c.name, mean, 5*se)
		}
		if se := variance * math.Sqrt(5.0/days); math.Abs(m2-variance) > 5*se {
			t.Errorf("%s: noise variance %.1f, want %.1f within %.1f", c.name, m2, variance, 5*se)
		}
		if zeros > days/2 {
			t.Errorf("%s: %d of %d days released the raw count", c.name, zeros, days)
		}
	}
}

// The host's view: requests write nothing for statistics; the release is
// one write of the clock after the day closed, of one shape whatever was
// counted; no raw count is in the store, the logs or the answer; and the
// answer is only what is stored, as stored.
func TestStatisticsHostView(t *testing.T) {
	v := newEnv(t, withStatistics)
	v.seedStatistics(2)
	today := utcDay(v.now())
	infected, contact := exposing(v.now().Add(-2 * time.Hour))
	v.mustUpload(infected)
	v.flushAll()
	calls := v.hostSees(func() {
		for range 3 {
			if _, err := v.exchange(0, nil, nil, contact); err != nil {
				t.Fatal(err)
			}
		}
		v.checkTrace(walk(v.now().Add(-time.Hour), 20, 48.85, 2.35, 0.0001))
	})
	if len(calls) != 0 {
		t.Errorf("exchanges and a trace check made store calls: %v", calls)
	}
	statsOps := func(calls []storeCall) []store.Op {
		var ops []store.Op
		for _, c := range calls {
			for _, o := range c.ops {
				if o.Table == tableStats {
					ops = append(ops, o)
				}
			}
		}
		return ops
	}
	if ops := statsOps(v.hostSees(func() { v.flushDue(time.Hour) })); len(ops) != 0 {
		t.Errorf("a flush within the day wrote %d statistics ops", len(ops))
	}
	// A distinctive raw count, which must show nowhere.
	const raw = 7919
	v.e.stats.add(statChecks, raw-v.rawCounts(today)[statChecks])
	busy := statsOps(v.hostSees(v.closeDay))
	quiet := statsOps(v.hostSees(v.closeDay)) // a day of nothing
	shape := func(ops []store.Op) []string {
		var s []string
		for _, o := range ops {
			s = append(s, strconv.Itoa(len(o.Key))+"/"+strconv.Itoa(len(o.Value))+"/"+strconv.FormatBool(o.Delete)+"/"+strconv.Itoa(int(o.Day)))
		}
		return s
	}
	if len(busy) != 1 || !slices.Equal(shape(busy), shape(quiet)) || len(busy[0].Value) != secretOverhead+releaseSize {
		t.Errorf("releases of a busy and a quiet day: %v and %v, want one row each of one shape", shape(busy), shape(quiet))
	}

	st := v.statisticsOf(v.e)
	answer, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	checks, _ := st.Days[0].Value(api.CountChecks)
	if checks == raw {
		t.Fatal("test set-up: the seeded noise of the checks is 0; pick another seed")
	}
	needle := binary.BigEndian.AppendUint64(nil, raw)
	for _, r := range append(v.snapshot(), v.records(tableStats)...) {
		if bytes.Contains(r.Value, needle) || bytes.Contains(r.Value, []byte(strconv.Itoa(raw))) {
			t.Errorf("table %s holds the raw count", r.Table)
		}
	}
	if strings.Contains(string(answer), strconv.Itoa(raw)) || strings.Contains(v.logs.String(), strconv.Itoa(raw)) {
		t.Error("the answer or the logs hold the raw count")
	}

	// Only what is stored is served: deleted, it is gone; back, it is
	// back; moved to another day or changed, it is refused.
	rows := v.records(tableStats)
	for _, r := range rows {
		v.del(tableStats, r.Key)
	}
	if got := v.statisticsOf(v.e); len(got.Days) != 0 {
		t.Errorf("served with no release stored: %+v", got)
	}
	for _, r := range rows {
		v.put(r)
	}
	if got := v.statisticsOf(v.e); !reflect.DeepEqual(got, st) {
		t.Errorf("releases put back: %+v, want %+v", got, st)
	}
	v.del(tableStats, rows[1].Key)
	v.put(store.Record{Table: tableStats, Key: rows[1].Key, Value: rows[0].Value}) // day 1's row as day 2's
	v.put(store.Record{Table: tableStats, Key: rows[0].Key, Value: flip(rows[0].Value)})
	if got := v.statisticsOf(v.e); len(got.Days) != 0 {
		t.Errorf("a moved and a changed release were served: %+v", got)
	}
	if !strings.Contains(v.logs.String(), "statistics release does not open") {
		t.Error("refused releases were not logged")
	}
}

// Releases past the horizon, and rows under malformed keys, are deleted
// with the next release and never served.
func TestStatisticsOldReleasesGo(t *testing.T) {
	v := newEnv(t, withStatistics)
	today := utcDay(v.now())
	var run HeadID
	old := store.Record{Table: tableStats, Key: statsKey(today-statisticsDays-1, run), Value: []byte("old")}
	bad := store.Record{Table: tableStats, Key: []byte("bad"), Value: []byte("bad")}
	v.put(old)
	v.put(bad)
	if got := v.statisticsOf(v.e); len(got.Days) != 0 {
		t.Errorf("served %+v", got)
	}
	v.closeDay()
	rows := v.records(tableStats)
	if len(rows) != 1 || !bytes.Equal(rows[0].Key, statsKey(today, v.e.heads.id)) {
		t.Errorf("after a release the table holds %v, want only the release", rows)
	}
}

// Replicas over one store each count what they served and store their
// own release; both answer the same sum.
func TestStatisticsReplicas(t *testing.T) {
	v := newEnv(t, withStatistics)
	b, err := Open(t.Context(), v.config())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.exchange(0, nil, nil, v.stranger()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := b.Exchange(t.Context(), api.ExchangeRequest{Report: encode(t, v.stranger())}); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.stats.days[utcDay(v.now())][statChecks]; got != 2 {
		t.Fatalf("the second replica counted %d checks, want 2", got)
	}
	v.closeDay()
	if err := b.FlushDue(t.Context()); err != nil {
		t.Fatal(err)
	}
	rows := v.records(tableStats)
	if len(rows) != 2 {
		t.Fatalf("%d releases, want one per replica", len(rows))
	}
	sum := v.openRelease(rows[0]).values[statChecks] + v.openRelease(rows[1]).values[statChecks]
	st, other := v.statisticsOf(v.e), v.statisticsOf(b)
	if !reflect.DeepEqual(st, other) {
		t.Errorf("the replicas answer %+v and %+v", st, other)
	}
	got, _ := st.Days[0].Value(api.CountChecks)
	if len(st.Days) != 1 || st.Days[0].Releases != 2 || got != max(sum, 0) {
		t.Errorf("answer %+v, want one day of two releases with checks %d", st, max(sum, 0))
	}
	if want := math.Sqrt(2 * noiseVariance(500, 1)); math.Abs(st.Days[0].Counts[0].NoiseStdDev-want) > 1e-9 {
		t.Errorf("noise deviation of two releases %.3f, want %.3f", st.Days[0].Counts[0].NoiseStdDev, want)
	}
}

// A run that stops loses the counts of its day (known limit): it stores
// nothing when it stops, and the run after it releases only its own part.
func TestStatisticsLostOnRestart(t *testing.T) {
	v := newEnv(t, withStatistics)
	first := v.e.heads.id
	if _, err := v.exchange(0, nil, nil, v.stranger()); err != nil {
		t.Fatal(err)
	}
	if err := v.e.FlushNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	v.clock.Advance(time.Hour)
	v.restart()
	if got := v.rawCounts(utcDay(v.now())); got != (dayCounts{}) {
		t.Errorf("a new run starts with counts %v", got)
	}
	v.closeDay()
	rows := v.records(tableStats)
	if len(rows) != 1 || !bytes.Equal(rows[0].Key[4:], v.e.heads.id[:]) || bytes.Equal(rows[0].Key[4:], first[:]) {
		t.Errorf("releases %v, want only the second run's", rows)
	}
}

// FuzzDecodeRelease: any plaintext decodes or is refused, without panic;
// what decodes encodes back to the same bytes.
func FuzzDecodeRelease(f *testing.F) {
	day := calendar.DayOf(testStart)
	good := release{day: day, from: 51780, epsilonMilli: 500, sens: [statCounts]int{1, 1, 1, 1, 0, 0, 1, 0}, values: [statCounts]int64{3, -1, 7919, 2}}
	f.Add(good.encode())
	f.Add(good.encode()[:releaseSize-1])
	f.Add(append([]byte{2}, good.encode()[1:]...))
	f.Add(make([]byte, releaseSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRelease(day, b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.encode(), b) {
			t.Errorf("decoded %+v encodes to other bytes", r)
		}
	})
}
