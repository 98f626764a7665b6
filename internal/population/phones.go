package population

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
)

// phone is what a person's phone keeps. Everyone has one, but only app
// users' phones record sightings, upload and check; the phones of people
// who run a foreign GAEN app (person.gaen) only broadcast, as far as
// conftrace can tell.
type phone struct {
	calib float64 // this phone's offset to the attenuation it measures, dB
	log   [][]rec // the sightings it recorded, by day
	// upload is its upload, if it made one.
	upload upload
	// firstNotified is the day the backend first told it "exposed", or -1.
	firstNotified int
	// notifiedBy says by which rules the backend told it "exposed" (on a
	// day on which the rule matched), at least once.
	notifiedBy struct{ reciprocal, oneSided bool }
	// order is its n-order state (orders.go).
	order phoneOrder
}

func newPhone(calib float64, days int) phone {
	return phone{calib: calib, log: make([][]rec, days), firstNotified: -1}
}

// sightings returns the sightings the phone recorded on days first to
// last, in the order it recorded them.
func (p *phone) sightings(first, last int) []contactlog.Sighting {
	var ss []contactlog.Sighting
	for k := max(first, 0); k <= last && k < len(p.log); k++ {
		for _, r := range p.log[k] {
			ss = append(ss, r.s)
		}
	}
	return ss
}

// recs returns the phone's records of days first to last, in the order
// of sightings(first, last).
func (p *phone) recs(first, last int) []rec {
	var rs []rec
	for k := max(first, 0); k <= last && k < len(p.log); k++ {
		rs = append(rs, p.log[k]...)
	}
	return rs
}

// upload is what the simulator knows of a phone's upload; the zero value
// means none. What it held went to the oracle (oracle.uploaded).
type upload struct {
	done    bool
	testDay int // the day the positive test was taken
}

// rec is one sighting a phone recorded, with what the simulator knows
// about it. The phone sends only the sighting; own is the simulator's
// record of what the phone broadcast meanwhile, which the backend derives
// from the phone's daily keys and the oracle takes from here, so that a
// report with the wrong keys shows as a mismatch.
type rec struct {
	s   contactlog.Sighting
	own enid.RPI
}

// pairInterval is a pair of people (lower index first) in a 10-minute
// interval, in which their phones record each other at most once.
type pairInterval struct {
	a, b int
	i    enid.Interval
}

// radio is the phones' Bluetooth: the daily keys from which every phone's
// rotating identifiers come, and what each phone of an encounter hears of
// the other.
type radio struct {
	rng *mrand.Rand // the run's generator
	// gaenRNG draws what app phones hear of GAEN-only phones, so that
	// adding those phones changes none of the run's other draws.
	gaenRNG   *mrand.Rand
	clock     *simClock
	seed      uint64
	nonce     nonce
	detection float64 // Config.Detection

	// mu guards keys: the concurrent checks build their reports from
	// them.
	mu   sync.Mutex
	keys map[[2]int]*enid.Key // by person and day
}

// key derives person i's daily key of day d from the seed (and the
// nonce), so that the identifiers are reproducible. The labels are part of
// the derivation: changing one changes every run's identifiers.
func (r *radio) key(i, d int) (*enid.Key, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if k, ok := r.keys[[2]int{i, d}]; ok {
		return k, nil
	}
	var b [24]byte
	binary.BigEndian.PutUint64(b[:], r.seed)
	binary.BigEndian.PutUint64(b[8:], uint64(i))
	binary.BigEndian.PutUint64(b[16:], uint64(d))
	h := sha256.Sum256(append([]byte("conftrace sim TEK"), r.nonce.mix("conftrace sim TEK nonce", b[:])...))
	start := enid.IntervalOf(r.clock.at(d, 0))
	k, err := enid.NewKey(enid.TEK(h[:16]), start, enid.RollingPeriod)
	if err != nil {
		return nil, fmt.Errorf("population: day %d: daily key of person %d: %w", d, i, err)
	}
	r.keys[[2]int{i, d}] = k
	return k, nil
}

// dailyKeys returns person i's daily keys of days first to last, in the
// form reports and GAEN exports carry them.
func (r *radio) dailyKeys(i, first, last int) ([]contactlog.DailyKey, error) {
	var ks []contactlog.DailyKey
	for d := first; d <= last; d++ {
		k, err := r.key(i, d)
		if err != nil {
			return nil, err
		}
		ks = append(ks, contactlog.DailyKey{TEK: k.TEK(), Start: k.Start(), Period: uint8(k.Period())})
	}
	return ks, nil
}

// report returns what person i's phone sends in an upload or a check
// covering days first to last: its daily keys of those days and its
// sightings.
func (r *radio) report(p *phone, i, first, last int) (contactlog.Report, error) {
	keys, err := r.dailyKeys(i, max(first, 0), last)
	if err != nil {
		return contactlog.Report{}, err
	}
	return contactlog.Report{Keys: keys, Sightings: p.sightings(first, last)}, nil
}

// attenuation models what phone p measures at dist metres with the
// generator rng: log-distance path loss, the phone's calibration offset
// and noise.
func attenuation(rng *mrand.Rand, p *phone, dist float64) uint8 {
	a := 50 + 25*math.Log10(dist) + p.calib + rng.NormFloat64()*4
	return uint8(min(254, max(1, math.Round(a))))
}

// intervals calls f for every 10-minute interval of encounter e on day d
// in which pair a, b has not been recorded yet, with the minutes they
// spent together in it, and marks it recorded in heard.
func (r *radio) intervals(d int, e encounter, heard map[pairInterval]bool, f func(i enid.Interval, minutes int)) {
	begin, end := r.clock.at(d, e.start), r.clock.at(d, e.start+e.length)
	lo, hi := min(e.a, e.b), max(e.a, e.b)
	for t := begin; t.Before(end); {
		i := enid.IntervalOf(t)
		next := (i + 1).Time()
		if next.After(end) {
			next = end
		}
		minutes := int(next.Sub(t) / time.Minute)
		t = next
		k := pairInterval{lo, hi, i}
		if minutes == 0 || heard[k] {
			continue // one sighting per pair and interval, as phones keep
		}
		heard[k] = true
		f(i, minutes)
	}
}

// exchange has the phones of two app users, pa and pb, who meet in e on
// day d, record each other: per 10-minute interval, each side hears the
// other with probability Config.Detection and measures its own duration
// and attenuation, so the two sides' records differ as they do in the
// field. heard holds the pairs and intervals already recorded today.
func (r *radio) exchange(d int, e encounter, pa, pb *person, heard map[pairInterval]bool) error {
	ka, err := r.key(e.a, d)
	if err != nil {
		return err
	}
	kb, err := r.key(e.b, d)
	if err != nil {
		return err
	}
	r.intervals(d, e, heard, func(i enid.Interval, minutes int) {
		ha, hb := hears(r.rng, r.detection, minutes), hears(r.rng, r.detection, minutes)
		ra, rb := ka.RPI(i), kb.RPI(i)
		if ha > 0 {
			s := contactlog.Sighting{Heard: rb, Interval: i, Minutes: ha, Attenuation: attenuation(r.rng, &pa.phone, e.dist)}
			pa.phone.log[d] = append(pa.phone.log[d], rec{s, ra})
		}
		if hb > 0 {
			s := contactlog.Sighting{Heard: ra, Interval: i, Minutes: hb, Attenuation: attenuation(r.rng, &pb.phone, e.dist)}
			pb.phone.log[d] = append(pb.phone.log[d], rec{s, rb})
		}
	})
	return nil
}

// overhear has app user l's phone record the GAEN-only phone of person b
// (a foreign app's, whose own records never reach conftrace) during
// encounter e on day d, with the same Bluetooth model as exchange but the
// GAEN generator.
func (r *radio) overhear(d int, e encounter, l int, pl *person, b int, heard map[pairInterval]bool) error {
	kl, err := r.key(l, d)
	if err != nil {
		return err
	}
	kb, err := r.key(b, d)
	if err != nil {
		return err
	}
	r.intervals(d, e, heard, func(i enid.Interval, minutes int) {
		if h := hears(r.gaenRNG, r.detection, minutes); h > 0 {
			s := contactlog.Sighting{Heard: kb.RPI(i), Interval: i, Minutes: h, Attenuation: attenuation(r.gaenRNG, &pl.phone, e.dist)}
			pl.phone.log[d] = append(pl.phone.log[d], rec{s, kl.RPI(i)})
		}
	})
	return nil
}

// hears returns how many of the minutes a phone heard the other phone in
// an interval in which they were together that long, drawn from rng: 0 if
// it missed the other (probability 1-detection), otherwise up to 2 minutes
// fewer, at least 1.
func hears(rng *mrand.Rand, detection float64, minutes int) uint8 {
	if rng.Float64() < detection {
		return uint8(max(1, minutes-rng.IntN(3)))
	}
	return 0
}
