package observerbench

import "time"

// Recheck recomputes the summaries and the checks of a run of days and
// phones from its records, as the test alters them.
func (r *Report) Recheck(days, phones int, tolerance time.Duration) []string {
	r.summarize(Config{Days: days, Phones: phones, Tolerance: tolerance})
	return r.Failures
}
