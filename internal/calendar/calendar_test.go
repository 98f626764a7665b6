package calendar

import (
	"math"
	"testing"
	"time"
)

func TestDayOf(t *testing.T) {
	d := DayOf(time.Date(2020, 4, 10, 23, 59, 59, 0, time.UTC))
	if d != 18362 || d.String() != "2020-04-10" {
		t.Fatalf("DayOf(2020-04-10T23:59:59Z) = %d (%v), want 18362 (2020-04-10)", d, d)
	}
	// The UTC day, whatever the location.
	berlin := time.FixedZone("CEST", 2*3600)
	if got := DayOf(time.Date(2020, 4, 11, 1, 0, 0, 0, berlin)); got != d {
		t.Errorf("DayOf(2020-04-11T01:00+02:00) = %v, want %v", got, d)
	}
	if got := DayOf(d.Time()); got != d {
		t.Errorf("DayOf(d.Time()) = %v, want %v", got, d)
	}
	if got := DayOf(d.Time().Add(-time.Nanosecond)); got != d-1 {
		t.Errorf("DayOf(a nanosecond before midnight) = %v, want %v", got, d-1)
	}
	if got := d.Unix(); got != d.Time().Unix() {
		t.Errorf("Unix() = %d, want %d", got, d.Time().Unix())
	}
}

// No time wraps around to an unrelated day.
func TestDayOfUnixBounds(t *testing.T) {
	for _, c := range []struct {
		sec  int64
		want Day
	}{
		{math.MinInt64, 0},
		{-1, 0},
		{0, 0},
		{86399, 0},
		{86400, 1},
		{int64(math.MaxUint32)*86400 + 86399, math.MaxUint32},
		{int64(math.MaxUint32+1) * 86400, math.MaxUint32},
		{math.MaxInt64, math.MaxUint32},
	} {
		if got := DayOfUnix(c.sec); got != c.want {
			t.Errorf("DayOfUnix(%d) = %d, want %d", c.sec, got, c.want)
		}
	}
}
