package loadbench

import (
	mrand "math/rand/v2"

	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/enid"
)

// phone is a simulated phone's daily keys: days consecutive keys, the last
// of them today's.
type phone struct {
	keys    []contactlog.DailyKey
	derived []*enid.Key
}

// newPhone returns a phone whose days keys end with the key of today (the
// first interval of today's key).
func newPhone(rng *mrand.Rand, today enid.Interval, days int) (*phone, error) {
	p := &phone{keys: make([]contactlog.DailyKey, days), derived: make([]*enid.Key, days)}
	for d := range days {
		var tek enid.TEK
		for i := range tek {
			tek[i] = byte(rng.Uint32())
		}
		p.keys[d] = contactlog.DailyKey{TEK: tek, Start: today - enid.Interval((days-1-d)*enid.RollingPeriod), Period: enid.RollingPeriod}
		k, err := p.keys[d].Key()
		if err != nil {
			return nil, err
		}
		p.derived[d] = k
	}
	return p, nil
}

// rpi returns the phone's RPI at iv, which one of its keys must cover.
func (p *phone) rpi(iv enid.Interval) enid.RPI {
	for d, k := range p.keys {
		if k.Contains(iv) {
			return p.derived[d].RPI(iv)
		}
	}
	return enid.RPI{}
}

// Encounters of a met phone with its uploader: two sightings each way, in
// consecutive intervals, of 10 minutes at an attenuation that weighs 100%,
// so that a check of the met phone comes out exposed (20 weighted minutes,
// above the default policy's 15).
const (
	encounterIntervals  = 2
	encounterMinutes    = 10
	encounterAttenation = 50
)

// meet has uploader u and checker c meet on the day before today that
// rng picks (days back, 1 to 13): it returns the sightings each makes of
// the other.
func meet(rng *mrand.Rand, today enid.Interval, u, c *phone) (ofChecker, ofUploader []contactlog.Sighting) {
	day := today - enid.Interval((1+rng.IntN(uploadDays-1))*enid.RollingPeriod)
	iv := day + enid.Interval(rng.IntN(enid.RollingPeriod-encounterIntervals))
	for k := range encounterIntervals {
		at := iv + enid.Interval(k)
		ofChecker = append(ofChecker, contactlog.Sighting{Heard: c.rpi(at), Interval: at, Minutes: encounterMinutes, Attenuation: encounterAttenation})
		ofUploader = append(ofUploader, contactlog.Sighting{Heard: u.rpi(at), Interval: at, Minutes: encounterMinutes, Attenuation: encounterAttenation})
	}
	return ofChecker, ofUploader
}

// seedOf expands a seed and a stream number into a ChaCha8 seed.
func seedOf(s, stream uint64) [32]byte {
	var k [32]byte
	for i := range 8 {
		k[i] = byte(s >> (8 * i))
		k[8+i] = byte(stream >> (8 * i))
	}
	return k
}
