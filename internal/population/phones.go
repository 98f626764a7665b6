package population

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"time"

	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
)

// phone is what a person's phone keeps. Everyone has one, but only app
// users' phones log, upload and check.
type phone struct {
	calib float64 // this phone's offset to the attenuation it measures, dB
	log   [][]rec // the tuples it logged, by day
	// upload is its upload of tuples, if it made one.
	upload upload
	// firstNotified is the day the backend first told it "exposed", or -1.
	firstNotified int
}

func newPhone(calib float64, days int) phone {
	return phone{calib: calib, log: make([][]rec, days), firstNotified: -1}
}

// tuples returns the tuples the phone logged on days first to last.
func (p *phone) tuples(first, last int) []contactlog.Tuple {
	var ts []contactlog.Tuple
	for k := first; k <= last; k++ {
		for _, r := range p.log[k] {
			ts = append(ts, r.t)
		}
	}
	return ts
}

// upload is what the simulator knows of a phone's upload; the zero value
// means none.
type upload struct {
	done bool
	at   time.Time // when the backend acknowledged it
	day  int       // the day it was sent
	// first is the first day of its window; testDay the day the positive
	// test was taken.
	first, testDay int
}

// rec is one tuple a phone logged, with what the simulator knows about it.
type rec struct {
	t       contactlog.Tuple
	partner int32
	// mirror is the partner's duration for the same interval, 0 when the
	// partner's phone did not hear this one.
	mirror uint16
}

// pairInterval is a pair of people (lower index first) in a 10-minute
// interval, in which their phones log each other at most once.
type pairInterval struct {
	a, b int
	i    enid.Interval
}

// radio is the phones' Bluetooth: the daily keys from which every phone's
// rotating identifiers come, and what each phone of an encounter hears of
// the other.
type radio struct {
	rng       *mrand.Rand // the run's generator
	clock     *simClock
	seed      uint64
	nonce     nonce
	detection float64              // Config.Detection
	keys      map[[2]int]*enid.Key // by person and day
}

// key derives person i's daily key of day d from the seed (and the
// nonce), so that the identifiers are reproducible. The labels are part of
// the derivation: changing one changes every run's identifiers.
func (r *radio) key(i, d int) (*enid.Key, error) {
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

// attenuation models what phone p measures at dist metres: log-distance
// path loss, the phone's calibration offset and noise.
func (r *radio) attenuation(p *phone, dist float64) uint8 {
	a := 50 + 25*math.Log10(dist) + p.calib + r.rng.NormFloat64()*4
	return uint8(min(254, max(1, math.Round(a))))
}

// exchange has the phones of pa and pb, who meet in e on day d, log each
// other: per 10-minute interval, each side hears the other with
// probability Config.Detection and measures its own duration and
// attenuation, so the two sides' records differ as they do in the field.
// heard holds the pairs and intervals already logged today.
func (r *radio) exchange(d int, e encounter, pa, pb *person, heard map[pairInterval]bool) error {
	ka, err := r.key(e.a, d)
	if err != nil {
		return err
	}
	kb, err := r.key(e.b, d)
	if err != nil {
		return err
	}
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
			continue // one tuple per pair and interval, as phones keep
		}
		heard[k] = true
		ha, hb := r.hears(minutes), r.hears(minutes)
		ra, rb := ka.RPI(i), kb.RPI(i)
		if ha > 0 {
			pa.phone.log[d] = append(pa.phone.log[d], rec{contactlog.Tuple{Own: ra, Heard: rb, Interval: i, Duration: ha, Attenuation: r.attenuation(&pa.phone, e.dist)}, int32(e.b), hb})
		}
		if hb > 0 {
			pb.phone.log[d] = append(pb.phone.log[d], rec{contactlog.Tuple{Own: rb, Heard: ra, Interval: i, Duration: hb, Attenuation: r.attenuation(&pb.phone, e.dist)}, int32(e.a), ha})
		}
	}
	return nil
}

// hears returns how many of the minutes a phone heard the other phone in
// an interval in which they were together that long: 0 if it missed the
// other, otherwise up to 2 minutes fewer, at least 1.
func (r *radio) hears(minutes int) uint16 {
	if r.rng.Float64() < r.detection {
		return uint16(max(1, minutes-r.rng.IntN(3)))
	}
	return 0
}
