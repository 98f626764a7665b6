package enclave

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
)

// CheckExposure answers whether any uploaded tuple mirrors one of the
// device's. The answer lists every day of the retention window, so its
// size does not depend on whether the device was exposed. Tuples outside the
// window cannot match and are skipped. Nothing is stored or logged.
func (e *Enclave) CheckExposure(ctx context.Context, r api.ExposureRequest) (api.ExposureResponse, error) {
	tuples, err := contactlog.UnmarshalBatch(r.Tuples, e.policy.Limits.MaxCheckTuples)
	clear(r.Tuples)
	if err != nil {
		if errors.Is(err, contactlog.ErrTooMany) {
			return api.ExposureResponse{}, api.Errorf(api.CodeTooLarge, "%v (policy limit %d tuples)", err, e.policy.Limits.MaxCheckTuples)
		}
		return api.ExposureResponse{}, api.Errorf(api.CodeMalformed, "tuples: %v", err)
	}
	defer clear(tuples)
	now := e.now()
	first, last := e.window(now)
	n := int(last-first) + 1
	minutes := make([]int, n)
	weighted := make([]int, n)
	minAtt := make([]int, n)
	for i := range minAtt {
		minAtt[i] = 255
	}
	risk := e.policy.Risk
	var buf []matchindex.Contact
	for _, t := range tuples {
		day := calendar.DayOf(t.Interval.Time())
		if day < first || day > last {
			continue
		}
		buf = matchindex.Match(e.index, buf[:0], matchindex.NewKey(t.Own, t.Heard), uint32(t.Interval), uint32(risk.IntervalTolerance))
		if len(buf) == 0 {
			continue
		}
		// Both sides heard each other for at most the shorter of the two
		// durations; the attenuation is what this device measured.
		m := int(t.Duration)
		if c := int(buf[0].Minutes); c < m {
			m = c
		}
		d := int(day - first)
		minutes[d] += m
		weighted[d] += risk.WeightedMinutes(m, int(t.Attenuation))
		minAtt[d] = min(minAtt[d], int(t.Attenuation))
	}
	clear(buf)
	resp := api.ExposureResponse{Days: make([]api.ExposureDay, n)}
	for i := range n {
		exposed := risk.Exposed(weighted[i])
		resp.Exposed = resp.Exposed || exposed
		resp.Days[i] = api.ExposureDay{
			Date:            dayDate(first + calendar.Day(i)),
			Minutes:         minutes[i],
			WeightedMinutes: weighted[i],
			MinAttenuation:  minAtt[i],
			Exposed:         exposed,
		}
	}
	return resp, nil
}

// ExposureResponseBound returns the encoded size of the largest exposure
// answer the policy allows, so the HTTP layer can pad every answer to it.
func (e *Enclave) ExposureResponseBound() int {
	p := e.policy
	most := p.Limits.MaxCheckTuples * p.Limits.MaxTupleMinutes
	heaviest := 0
	for _, w := range p.Risk.WeightsPercent {
		heaviest = max(heaviest, w)
	}
	resp := api.ExposureResponse{Exposed: true, Days: make([]api.ExposureDay, p.RetentionDays)}
	for i := range resp.Days {
		resp.Days[i] = api.ExposureDay{Date: "0000-00-00", Minutes: most, WeightedMinutes: most * heaviest, MinAttenuation: 255, Exposed: true}
	}
	b, _ := json.Marshal(resp)
	return len(b) + 64 // Binary HTTP framing and the content-type field
}

func dayDate(d calendar.Day) string { return d.Time().Format(api.DateLayout) }
