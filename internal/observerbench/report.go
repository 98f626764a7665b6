package observerbench

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/conftrace/conftrace/api"
)

// Report is what the host saw, by group, and the checks' verdict.
type Report struct {
	Days            int     `json:"days"`
	PhonesPerGroup  int     `json:"phones_per_group"`
	SightingsPerDay int     `json:"sightings_per_day"`
	Seed            uint64  `json:"seed"`
	FlushSeconds    int     `json:"store_flush_seconds"`
	FlushRows       int     `json:"store_flush_rows"`
	RowBytes        int     `json:"store_row_bytes"`
	ReleaseMillis   int     `json:"answer_release_ms"`
	ToleranceMillis float64 `json:"tolerance_ms"`

	// Groups summarizes the exchanges of each group.
	Groups []GroupView `json:"groups"`
	// FlushGrowth summarizes how much the store grew at the flushes after
	// uploads and at the others.
	FlushGrowth []GrowthSummary `json:"flush_growth"`
	// Flushes are the scheduled flushes, in order.
	Flushes []Flush `json:"flushes"`
	// Probes counts the flushes asked for a second before a scheduled
	// one; EarlyWrites are those that wrote anyway.
	Probes      int     `json:"probes"`
	EarlyWrites []Flush `json:"early_writes,omitempty"`
	// Maintenance is the rest of the backend's maintenance (expiry, key
	// rotation), run after each flush; MaintenanceWritten summarizes the
	// bytes it wrote.
	Maintenance        []Flush `json:"maintenance"`
	MaintenanceWritten Stats   `json:"maintenance_written_bytes"`
	// Lab is the health authority's result submissions.
	Lab []LabSubmission `json:"lab"`
	// Exchanges are every phone's exchanges, in the order they happened.
	Exchanges []Exchange `json:"exchanges"`
	// Failures are the checks that failed: what the host can tell apart,
	// or what the run failed to make happen. Empty when all passed.
	Failures []string `json:"failures"`
}

// Exchange is one phone's daily exchange: what the host saw of it, and
// what the phone did and learnt, which the host must not learn.
type Exchange struct {
	Group Group     `json:"group"`
	Phone int       `json:"phone"`
	Day   int       `json:"day"`
	At    time.Time `json:"at"` // simulated
	// ReportBytes is the length of the report it carried, which sets the
	// request's size class.
	ReportBytes int `json:"report_bytes"`

	// The host's view: every outer round trip, the connections dialed and
	// the bytes that crossed them.
	Trips        []RoundTrip `json:"round_trips"`
	Connections  int         `json:"connections"`
	WireOutBytes int64       `json:"wire_out_bytes"`
	WireInBytes  int64       `json:"wire_in_bytes"`
	// RequestBytes and AnswerBytes are the body sizes of the gateway
	// request that the exchange's answer came in.
	RequestBytes int `json:"request_bytes"`
	AnswerBytes  int `json:"answer_bytes"`
	// OffsetMillis is how long after the last release grid point the
	// answer completed; Steps how many grid points passed between half a
	// step after the request's sending and the answer's completion (1
	// when the answer left at the first point the server aims for).
	OffsetMillis float64 `json:"offset_ms"`
	Steps        int     `json:"grid_steps"`
	// PhaseMillis is how long after a grid point the request was sent.
	PhaseMillis float64 `json:"phase_ms"`
	// StoreChanged names the backend's files that changed during it.
	StoreChanged []string `json:"store_changed,omitempty"`

	// Inside the TEE.
	Polled      bool       `json:"polled"`
	Uploading   bool       `json:"uploading"`
	UploadTaken bool       `json:"upload_taken"`
	UploadError string     `json:"upload_error,omitempty"`
	Result      api.Result `json:"result,omitempty"`
	Durable     bool       `json:"durable"`
	Exposed     bool       `json:"exposed"`
}

// shape is everything the host sees of an exchange but its times.
func (x Exchange) shape() string {
	var b strings.Builder
	for _, t := range x.Trips {
		fmt.Fprintf(&b, "%s %s %d: %d>%d bytes; ", t.Method, t.Path, t.Status, t.RequestBytes, t.AnswerBytes)
	}
	fmt.Fprintf(&b, "%d connections, %d bytes out, %d in", x.Connections, x.WireOutBytes, x.WireInBytes)
	return b.String()
}

// Flush is what the host saw at a scheduled flush.
type Flush struct {
	At  time.Time `json:"at"` // simulated
	Day int       `json:"day,omitempty"`
	// UploadsBefore counts the uploads taken since the previous flush.
	UploadsBefore int `json:"uploads_before"`
	// Changed names the files that changed; GrowthBytes is how many bytes
	// the store's files grew by, WrittenBytes how many of their bytes
	// changed (in 4 KiB blocks).
	Changed      []string `json:"changed"`
	GrowthBytes  int64    `json:"growth_bytes"`
	WrittenBytes int64    `json:"written_bytes"`
}

// LabSubmission is a health authority's submission of a test result.
type LabSubmission struct {
	Result       api.Result  `json:"result"`
	At           time.Time   `json:"at"` // simulated
	Trips        []RoundTrip `json:"round_trips"`
	StoreChanged []string    `json:"store_changed"`
	GrowthBytes  int64       `json:"growth_bytes"`
	WrittenBytes int64       `json:"written_bytes"`
}

// GroupView is what the host saw of one group's exchanges, and what the
// group did inside the TEE.
type GroupView struct {
	Group     Group `json:"group"`
	Phones    int   `json:"phones"`
	Exchanges int   `json:"exchanges"`
	// RequestSizes are the distinct outer request sizes, by report length.
	RequestSizes []ReportSizes `json:"request_sizes"`
	// AnswerSizes are the distinct outer answer sizes.
	AnswerSizes []int `json:"answer_sizes"`
	// StoreWrites counts the exchanges during which a store file changed.
	StoreWrites int `json:"exchanges_with_store_writes"`
	// OffGrid counts the answers that completed more than the tolerance
	// after a grid point; the offsets are summarized in milliseconds.
	OffGrid            int     `json:"off_grid"`
	MedianOffsetMillis float64 `json:"median_offset_ms"`
	MaxOffsetMillis    float64 `json:"max_offset_ms"`
	// LateReleases counts the answers that left at a later grid point
	// than the first at least half a step after their request was sent.
	LateReleases int `json:"late_releases"`

	// Inside the TEE: the polls, and the phones that learnt a positive or
	// a negative result, whose upload was taken, who heard it durable,
	// who were told they were exposed.
	Polls          int `json:"polls"`
	Positive       int `json:"phones_told_positive"`
	Negative       int `json:"phones_told_negative"`
	UploadsTaken   int `json:"phones_upload_taken"`
	UploadsDurable int `json:"phones_upload_durable"`
	Exposed        int `json:"phones_told_exposed"`
}

// ReportSizes are the distinct outer request sizes of reports of one
// length.
type ReportSizes struct {
	ReportBytes  int   `json:"report_bytes"`
	RequestBytes []int `json:"request_bytes"`
}

// GrowthSummary summarizes what some flushes did to the store: how much
// its files grew (SQLite grows the database at checkpoints, the
// write-ahead log until it wraps) and how many of their bytes changed.
type GrowthSummary struct {
	Kind    string `json:"kind"`
	Flushes int    `json:"flushes"`
	Growth  Stats  `json:"growth_bytes"`
	Written Stats  `json:"written_bytes"`
}

// Stats summarizes byte counts.
type Stats struct {
	Min    int64   `json:"min"`
	Median int64   `json:"median"`
	Max    int64   `json:"max"`
	Mean   float64 `json:"mean"`
}

func statsOf(vs []int64) Stats {
	if len(vs) == 0 {
		return Stats{}
	}
	var sum int64
	for _, v := range vs {
		sum += v
	}
	return Stats{Min: slices.Min(vs), Median: median(vs), Max: slices.Max(vs), Mean: float64(sum) / float64(len(vs))}
}

// distinct returns the sorted distinct values of f over xs.
func distinct[T any, V cmp.Ordered](xs []T, f func(T) V) []V {
	var vs []V
	for _, x := range xs {
		vs = append(vs, f(x))
	}
	slices.Sort(vs)
	return slices.Compact(vs)
}

func median[V cmp.Ordered](vs []V) V {
	var zero V
	if len(vs) == 0 {
		return zero
	}
	vs = slices.Sorted(slices.Values(vs))
	return vs[len(vs)/2]
}

// summarize fills the group views and the flush summaries from the
// records, and runs the checks.
func (r *Report) summarize(cfg Config) {
	tol := millis(cfg.Tolerance)
	byGroup := map[Group][]Exchange{}
	for _, x := range r.Exchanges {
		byGroup[x.Group] = append(byGroup[x.Group], x)
	}
	r.Groups = nil
	for _, g := range Groups {
		xs := byGroup[g]
		v := GroupView{Group: g, Phones: cfg.Phones, Exchanges: len(xs)}
		for _, n := range distinct(xs, func(x Exchange) int { return x.ReportBytes }) {
			same := slices.DeleteFunc(slices.Clone(xs), func(x Exchange) bool { return x.ReportBytes != n })
			v.RequestSizes = append(v.RequestSizes, ReportSizes{n, distinct(same, func(x Exchange) int { return x.RequestBytes })})
		}
		v.AnswerSizes = distinct(xs, func(x Exchange) int { return x.AnswerBytes })
		var offsets []float64
		told := map[int]map[string]bool{}
		for _, x := range xs {
			if len(x.StoreChanged) > 0 {
				v.StoreWrites++
			}
			if x.OffsetMillis > tol {
				v.OffGrid++
			}
			if x.Steps > 1 {
				v.LateReleases++
			}
			offsets = append(offsets, x.OffsetMillis)
			if x.Polled {
				v.Polls++
			}
			if told[x.Phone] == nil {
				told[x.Phone] = map[string]bool{}
			}
			t := told[x.Phone]
			t[string(x.Result)] = t[string(x.Result)] || x.Result != ""
			t["taken"] = t["taken"] || x.UploadTaken
			t["durable"] = t["durable"] || x.Durable
			t["exposed"] = t["exposed"] || x.Exposed
		}
		v.MedianOffsetMillis = median(offsets)
		if len(offsets) > 0 {
			v.MaxOffsetMillis = slices.Max(offsets)
		}
		for _, t := range told {
			v.Positive += b2i(t[string(api.Positive)])
			v.Negative += b2i(t[string(api.Negative)])
			v.UploadsTaken += b2i(t["taken"])
			v.UploadsDurable += b2i(t["durable"])
			v.Exposed += b2i(t["exposed"])
		}
		r.Groups = append(r.Groups, v)
	}
	r.FlushGrowth = nil
	for _, k := range []struct {
		kind string
		ok   func(Flush) bool
	}{
		{"after uploads", func(f Flush) bool { return f.UploadsBefore > 0 }},
		{"without uploads", func(f Flush) bool { return f.UploadsBefore == 0 }},
	} {
		var grown, written []int64
		for _, f := range r.Flushes {
			if k.ok(f) {
				grown, written = append(grown, f.GrowthBytes), append(written, f.WrittenBytes)
			}
		}
		r.FlushGrowth = append(r.FlushGrowth, GrowthSummary{Kind: k.kind, Flushes: len(grown), Growth: statsOf(grown), Written: statsOf(written)})
	}
	var maint []int64
	for _, m := range r.Maintenance {
		maint = append(maint, m.WrittenBytes)
	}
	r.MaintenanceWritten = statsOf(maint)
	r.Failures = r.check(cfg)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// check returns what the host could tell apart, and what the run failed
// to make happen.
func (r *Report) check(cfg Config) []string {
	fails := []string{}
	failf := func(format string, args ...any) { fails = append(fails, fmt.Sprintf(format, args...)) }

	// The host's view: identical between the groups.
	for _, v := range r.Groups {
		if v.Exchanges != cfg.Phones*cfg.Days {
			failf("%s: %d exchanges, want %d (a phone a day)", v.Group, v.Exchanges, cfg.Phones*cfg.Days)
		}
	}
	if sizes := distinct(r.Exchanges, func(x Exchange) int { return x.AnswerBytes }); len(sizes) != 1 {
		failf("answers come in %d sizes, want one: %s", len(sizes), r.byGroup(func(x Exchange) string { return fmt.Sprint(x.AnswerBytes) }))
	}
	for _, n := range distinct(r.Exchanges, func(x Exchange) int { return x.ReportBytes }) {
		same := slices.DeleteFunc(slices.Clone(r.Exchanges), func(x Exchange) bool { return x.ReportBytes != n })
		if sizes := distinct(same, func(x Exchange) int { return x.RequestBytes }); len(sizes) != 1 {
			failf("requests with reports of %d bytes come in %d sizes, want one: %v", n, len(sizes), sizes)
		}
	}
	for d := 1; d <= cfg.Days; d++ {
		day := slices.DeleteFunc(slices.Clone(r.Exchanges), func(x Exchange) bool { return x.Day != d })
		if n := distinct(day, func(x Exchange) int { return x.ReportBytes }); len(n) != 1 {
			// The harness's own promise, which the size checks rely on.
			failf("day %d: the phones' reports have %d lengths, want one: %v", d, len(n), n)
		}
		if shapes := distinct(day, Exchange.shape); len(shapes) != 1 {
			failf("day %d: the exchanges look %d ways on the wire, want one: %s", d, len(shapes), r.byGroupOf(day, Exchange.shape))
		}
	}
	for _, v := range r.Groups {
		if v.StoreWrites > 0 {
			failf("%s: the store changed during %d of %d exchanges: %s", v.Group, v.StoreWrites, v.Exchanges, r.changedDuring(v.Group))
		}
		if v.OffGrid > 0 {
			failf("%s: %d of %d answers completed more than %.1f ms after a release grid point (the latest %.1f ms)",
				v.Group, v.OffGrid, v.Exchanges, r.ToleranceMillis, v.MaxOffsetMillis)
		}
	}

	// The groups did differ inside the TEE.
	for _, v := range r.Groups {
		want := map[Group][5]int{ // told positive, negative, upload taken, durable, exposed
			Untested: {0, 0, 0, 0, 0},
			Negative: {0, cfg.Phones, 0, 0, 0},
			Positive: {cfg.Phones, 0, cfg.Phones, cfg.Phones, 0},
			Exposed:  {0, 0, 0, 0, cfg.Phones},
		}[v.Group]
		got := [5]int{v.Positive, v.Negative, v.UploadsTaken, v.UploadsDurable, v.Exposed}
		if got != want {
			failf("%s: phones told positive, negative, upload taken, upload durable, exposed: %v, want %v", v.Group, got, want)
		}
	}

	// Flushes on the clock, whatever was uploaded.
	if want := cfg.Days * 24 * 3600 / FlushSeconds; len(r.Flushes) != want {
		failf("%d flushes in %d days, want %d (one every %d s)", len(r.Flushes), cfg.Days, want, FlushSeconds)
	}
	var silent []Flush
	for i, f := range r.Flushes {
		if want := start.Add(time.Duration(i+1) * FlushSeconds * time.Second); !f.At.Equal(want) {
			failf("flush %d at %s, want %s", i+1, f.At.Format(time.RFC3339), want.Format(time.RFC3339))
		}
		if len(f.Changed) == 0 {
			silent = append(silent, f)
		}
	}
	if len(silent) > 0 {
		after := len(slices.DeleteFunc(slices.Clone(silent), func(f Flush) bool { return f.UploadsBefore == 0 }))
		failf("%d of %d flushes due wrote nothing (%d of them after uploads), the first at %s",
			len(silent), len(r.Flushes), after, silent[0].At.Format(time.RFC3339))
	}
	for _, f := range r.EarlyWrites {
		failf("asked a second before the flush due at %s, the backend wrote %v", f.At.Add(time.Second).Format(time.RFC3339), f.Changed)
	}
	for _, s := range r.FlushGrowth {
		if s.Flushes == 0 {
			failf("no flush %s: the run shows nothing of flushes %s", s.Kind, s.Kind)
		}
	}
	return fails
}

// byGroup lists the distinct values of f in each group.
func (r *Report) byGroup(f func(Exchange) string) string { return r.byGroupOf(r.Exchanges, f) }

func (r *Report) byGroupOf(xs []Exchange, f func(Exchange) string) string {
	var parts []string
	for _, g := range Groups {
		gx := slices.DeleteFunc(slices.Clone(xs), func(x Exchange) bool { return x.Group != g })
		parts = append(parts, fmt.Sprintf("%s [%s]", g, strings.Join(distinct(gx, f), " | ")))
	}
	return strings.Join(parts, "; ")
}

// changedDuring names the files that changed during a group's exchanges.
func (r *Report) changedDuring(g Group) string {
	files := map[string]int{}
	for _, x := range r.Exchanges {
		if x.Group == g {
			for _, f := range x.StoreChanged {
				files[f]++
			}
		}
	}
	var parts []string
	for _, f := range slices.Sorted(maps.Keys(files)) {
		parts = append(parts, fmt.Sprintf("%s (%d)", f, files[f]))
	}
	return strings.Join(parts, ", ")
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "What the host sees of %d groups of %d phones over %d simulated days (seed %d)\n",
		len(Groups), r.PhonesPerGroup, r.Days, r.Seed)
	fmt.Fprintf(&b, "policy: a flush every %d s of %d rows of %d bytes; answers released on a %d ms grid\n",
		r.FlushSeconds, r.FlushRows, r.RowBytes, r.ReleaseMillis)
	fmt.Fprintf(&b, "every report: %d sightings a day; on the grid: completed within %.1f ms after a grid point\n\n",
		r.SightingsPerDay, r.ToleranceMillis)

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "group\texchanges\trequest bytes\tanswer bytes\tstore writes\toff grid\toffset median ms\tmax ms\tlate\t|\tpolls\ttold +\ttold -\tuploaded\tdurable\texposed\t")
	for _, v := range r.Groups {
		var req []int
		for _, s := range v.RequestSizes {
			req = append(req, s.RequestBytes...)
		}
		slices.Sort(req)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%.2f\t%.2f\t%d\t|\t%d\t%d\t%d\t%d\t%d\t%d\t\n",
			v.Group, v.Exchanges, ints(slices.Compact(req)), ints(v.AnswerSizes), v.StoreWrites, v.OffGrid,
			v.MedianOffsetMillis, v.MaxOffsetMillis, v.LateReleases,
			v.Polls, v.Positive, v.Negative, v.UploadsTaken, v.UploadsDurable, v.Exposed)
	}
	tw.Flush()
	fmt.Fprintf(&b, "(left of |: what the host sees; right: what happened inside the TEE. late: answers that left\n"+
		"later than the first grid point at least half a step after their request was sent)\n\n")

	fmt.Fprintf(&b, "report lengths, by day:")
	for d := 1; d <= r.Days; d++ {
		day := slices.DeleteFunc(slices.Clone(r.Exchanges), func(x Exchange) bool { return x.Day != d })
		fmt.Fprintf(&b, " %s", ints(distinct(day, func(x Exchange) int { return x.ReportBytes })))
	}
	fmt.Fprintf(&b, "\nflushes: %d on the schedule; %d asked a second early, %d of which wrote\n", len(r.Flushes), r.Probes, len(r.EarlyWrites))
	for _, s := range r.FlushGrowth {
		fmt.Fprintf(&b, "  %-16s %4d flushes; bytes written min %d, median %d, max %d, mean %.0f; files grew min %d, median %d, max %d, mean %.0f\n",
			s.Kind+":", s.Flushes, s.Written.Min, s.Written.Median, s.Written.Max, s.Written.Mean,
			s.Growth.Min, s.Growth.Median, s.Growth.Max, s.Growth.Mean)
	}
	m := r.MaintenanceWritten
	fmt.Fprintf(&b, "maintenance after each flush (expiry, key rotation): %d runs; bytes written min %d, median %d, max %d, mean %.0f\n",
		len(r.Maintenance), m.Min, m.Median, m.Max, m.Mean)
	for _, res := range []api.Result{api.Positive, api.Negative} {
		var n, writes int
		var req, ans []int
		for _, l := range r.Lab {
			if l.Result != res {
				continue
			}
			n++
			writes += b2i(len(l.StoreChanged) > 0)
			for _, t := range l.Trips {
				req, ans = append(req, t.RequestBytes), append(ans, t.AnswerBytes)
			}
		}
		slices.Sort(req)
		slices.Sort(ans)
		fmt.Fprintf(&b, "lab, %s results: %d submitted, requests %s bytes, answers %s bytes, %d written to the store at once\n",
			res, n, ints(slices.Compact(req)), ints(slices.Compact(ans)), writes)
	}
	if len(r.Failures) == 0 {
		fmt.Fprintf(&b, "\nall checks passed: the host's records are identical between the groups\n")
	} else {
		fmt.Fprintf(&b, "\n%d checks FAILED:\n", len(r.Failures))
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "  - %s\n", f)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func ints(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = fmt.Sprint(v)
	}
	return strings.Join(s, ",")
}
