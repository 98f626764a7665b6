package enclave

// The releases of public statistics (statistics.go): one row per closed
// day per run of the enclave, drawn once on the flush clock, sealed, and
// stored under the day and the run, of one size whatever the counts. The
// public endpoint serves only these rows.

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/store"
	"github.com/conftrace/conftrace/policy"
)

const (
	// tableStats holds the releases, of no day (retention does not delete
	// them: they are noisy aggregates, not personal data), keyed by day
	// and run.
	tableStats = "stats"
	// statisticsDays is how many days back releases are served and kept.
	statisticsDays = 366
	// releaseVersion is the first byte of a release's plaintext.
	releaseVersion = 1
	// mechanismDiscreteLaplace is policy.MechanismDiscreteLaplace in a
	// release.
	mechanismDiscreteLaplace = 1
	// releaseHeader is version, day, first second counted, mechanism, ε.
	releaseHeader = 1 + 4 + 4 + 1 + 4
	// releaseSize is a release's plaintext: the header and, for each
	// count, its sensitivity and noisy value.
	releaseSize = releaseHeader + statCounts*(4+8)
	// maxReleaseValue bounds a stored noisy value, so that sums of a
	// year of releases of many runs cannot overflow.
	maxReleaseValue = 1 << 48
	// maxSensitivity bounds a stored sensitivity.
	maxSensitivity = 1 << 16
)

// statsRelease is one run's release of one day, sealed.
type statsRelease struct {
	key, sealed []byte
}

// release is a day's release, open.
type release struct {
	day          calendar.Day
	from         int64 // the first second of the day counted
	epsilonMilli int
	sens         [statCounts]int
	values       [statCounts]int64
}

// statsKey returns the store key of run's release of day: the day, then
// the run.
func statsKey(day calendar.Day, run HeadID) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(day)), run[:]...)
}

// parseStatsKey reads a release's store key.
func parseStatsKey(key []byte) (calendar.Day, HeadID, bool) {
	var run HeadID
	if len(key) != 4+len(run) {
		return 0, run, false
	}
	copy(run[:], key[4:])
	return calendar.Day(binary.BigEndian.Uint32(key)), run, true
}

// statsName is the name a release is sealed under, so that the host
// cannot pass one day's or one run's release off as another's.
func statsName(day calendar.Day, run HeadID) string {
	return fmt.Sprintf("%s/%d/%s", tableStats, day, run)
}

// encode returns r's plaintext, of releaseSize bytes.
func (r release) encode() []byte {
	b := make([]byte, 0, releaseSize)
	b = append(b, releaseVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(r.day))
	b = binary.BigEndian.AppendUint32(b, uint32(r.from))
	b = append(b, mechanismDiscreteLaplace)
	b = binary.BigEndian.AppendUint32(b, uint32(r.epsilonMilli))
	for i := range statCounts {
		b = binary.BigEndian.AppendUint32(b, uint32(r.sens[i]))
		b = binary.BigEndian.AppendUint64(b, uint64(r.values[i]))
	}
	return b
}

// decodeRelease reads the plaintext of day's release.
func decodeRelease(day calendar.Day, b []byte) (release, error) {
	if len(b) != releaseSize {
		return release{}, fmt.Errorf("enclave: statistics release of %d bytes, want %d", len(b), releaseSize)
	}
	if b[0] != releaseVersion {
		return release{}, fmt.Errorf("enclave: statistics release of version %d, want %d", b[0], releaseVersion)
	}
	r := release{day: calendar.Day(binary.BigEndian.Uint32(b[1:])), from: int64(binary.BigEndian.Uint32(b[5:])),
		epsilonMilli: int(binary.BigEndian.Uint32(b[10:]))}
	switch {
	case r.day != day:
		return release{}, fmt.Errorf("enclave: statistics release of day %s stored under %s", r.day, day)
	case r.from < 0 || r.from >= 86400:
		return release{}, fmt.Errorf("enclave: statistics release counted from second %d of its day", r.from)
	case b[9] != mechanismDiscreteLaplace:
		return release{}, fmt.Errorf("enclave: statistics release of unknown mechanism %d", b[9])
	case r.epsilonMilli < 1 || r.epsilonMilli > policy.MaxEpsilonMilli:
		return release{}, fmt.Errorf("enclave: statistics release with epsilon_milli %d", r.epsilonMilli)
	}
	for i := range statCounts {
		c := b[releaseHeader+12*i:]
		r.sens[i] = int(binary.BigEndian.Uint32(c))
		r.values[i] = int64(binary.BigEndian.Uint64(c[4:]))
		if r.sens[i] > maxSensitivity || r.values[i] > maxReleaseValue || r.values[i] < -maxReleaseValue {
			return release{}, fmt.Errorf("enclave: statistics release: count %d out of range", i)
		}
	}
	return r, nil
}

// releaseStatistics draws, seals and stores the release of every day
// that closed since the last, with this run's time mark: a write of the
// clock, once a day, of one shape whatever was counted. FlushDue calls it,
// under journal.flushing. A failure is logged (once while it lasts) and
// retried at the next flush with the same noisy values.
func (e *Enclave) releaseStatistics(ctx context.Context) {
	s := e.stats
	if s == nil {
		return
	}
	err := e.storeReleases(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil && !s.failing:
		s.failing = true
		e.log.Error("storing the statistics release failed; it is retried at the next flush", "err", err)
	case err == nil && s.failing:
		s.failing = false
		e.log.Info("statistics release stored after failures")
	}
}

// storeReleases draws the releases due and stores those pending.
func (e *Enclave) storeReleases(ctx context.Context) error {
	s := e.stats
	now := e.now()
	today := calendar.DayOf(now)
	s.mu.Lock()
	err := e.drawLocked(today)
	pending := slices.Clone(s.pending)
	s.mu.Unlock()
	if err != nil || len(pending) == 0 {
		return err
	}
	var b store.Batch
	for _, r := range pending {
		b.Put(tableStats, r.key, store.NoDay, r.sealed)
	}
	// Releases past the horizon go, so that the table stays small.
	err = e.store.Scan(ctx, tableStats, func(r store.Record) error {
		if d, _, ok := parseStatsKey(r.Key); !ok || d+statisticsDays < today {
			b.Delete(tableStats, r.Key)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("enclave: reading statistics releases: %w", err)
	}
	if err := e.putMark(ctx, &b, now); err != nil {
		return e.internal("sealing time mark", err)
	}
	if err := e.store.Apply(ctx, &b); err != nil {
		return fmt.Errorf("enclave: storing statistics releases: %w", err)
	}
	s.mu.Lock()
	s.pending = s.pending[len(pending):]
	s.mu.Unlock()
	return nil
}

// drawLocked draws the noise of every closed day not drawn yet, seals
// each day's release, and queues it in s.pending; the raw counts are
// cleared. The caller holds s.mu.
func (e *Enclave) drawLocked(today calendar.Day) error {
	s := e.stats
	for {
		d, c, from, ok := s.takeClosedLocked(today)
		if !ok {
			return nil
		}
		r := release{day: d, from: from, epsilonMilli: s.rule.EpsilonMilli, sens: s.sens}
		for i := range statCounts {
			if s.sens[i] == 0 {
				continue
			}
			z, err := s.random.discreteLaplace(noiseParams(s.rule.EpsilonMilli, s.sens[i]))
			if err != nil {
				// Nothing of the day was released; its counts go
				// (crypto/rand does not fail in practice).
				clear(c[:])
				return err
			}
			r.values[i] = min(max(c[i]+z, -maxReleaseValue), maxReleaseValue)
		}
		clear(c[:])
		plain := r.encode()
		sealed, err := e.SealSecret(statsName(d, e.heads.id), plain)
		clear(plain)
		if err != nil {
			return e.internal("sealing statistics release", err)
		}
		s.pending = append(s.pending, statsRelease{key: statsKey(d, e.heads.id), sealed: sealed})
	}
}

// Statistics returns the released statistics of the last days: every
// release stored, of every run, summed by day (see api.Statistics). It
// reads only the stored releases, never the counts in memory. A release
// that does not open or decode is logged and left out.
func (e *Enclave) Statistics(ctx context.Context) (api.Statistics, error) {
	if e.stats == nil {
		return api.Statistics{}, api.Errorf(api.CodeNotFound, "the attested policy releases no statistics")
	}
	today := calendar.DayOf(e.now())
	var rs []release
	err := e.store.Scan(ctx, tableStats, func(rec store.Record) error {
		day, run, ok := parseStatsKey(rec.Key)
		if !ok {
			e.log.Error("a statistics release is stored under a malformed key; ignored")
			return nil
		}
		if day+statisticsDays < today || day >= today {
			return nil
		}
		plain, err := e.OpenSecret(statsName(day, run), rec.Value)
		if err != nil {
			e.log.Error("a statistics release does not open; ignored (tampered, moved, or sealed under another key)", "day", day.String(), "err", err)
			return nil
		}
		r, err := decodeRelease(day, plain)
		if err != nil {
			e.log.Error("a statistics release does not decode; ignored", "day", day.String(), "err", err)
			return nil
		}
		rs = append(rs, r)
		return nil
	})
	if err != nil {
		return api.Statistics{}, e.internal("reading statistics releases", err)
	}
	return sumReleases(rs), nil
}

// sumReleases sums releases by day, oldest day first.
func sumReleases(rs []release) api.Statistics {
	slices.SortStableFunc(rs, func(a, b release) int { return cmp.Compare(a.day, b.day) })
	out := api.Statistics{Days: []api.StatisticsDay{}}
	names := api.StatisticsCountNames()
	for i := 0; i < len(rs); {
		j := i
		for j < len(rs) && rs[j].day == rs[i].day {
			j++
		}
		day := api.StatisticsDay{Date: dayDate(rs[i].day), Mechanism: policy.MechanismDiscreteLaplace, Releases: j - i, Counts: []api.NoisyCount{}}
		var sum [statCounts]int64
		var variance [statCounts]float64
		var sens [statCounts]int
		eps := 0
		for _, r := range rs[i:j] {
			eps = max(eps, r.epsilonMilli)
			day.Partial = day.Partial || r.from > 0
			for k := range statCounts {
				if r.sens[k] == 0 {
					continue
				}
				sum[k] += r.values[k]
				variance[k] += noiseVariance(r.epsilonMilli, r.sens[k])
				sens[k] = max(sens[k], r.sens[k])
			}
		}
		day.Epsilon = float64(eps) / 1000
		for k := range statCounts {
			if sens[k] == 0 {
				continue
			}
			day.Counts = append(day.Counts, api.NoisyCount{Name: names[k], Value: max(sum[k], 0), Sensitivity: sens[k], NoiseStdDev: math.Sqrt(variance[k])})
		}
		out.Days = append(out.Days, day)
		i = j
	}
	return out
}
