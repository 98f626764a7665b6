package population

import (
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

// WriteTable writes the summary as a plain-text table.
func WriteTable(w io.Writer, s *Summary) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	network := "client-side, loopback"
	if s.Live {
		network = "client-side, to the running backend"
	}
	exact := "YES: every exposure answer was exactly what the protocol requires"
	if !s.ProtocolExact {
		exact = "NO: THE BACKEND'S ANSWERS DIFFER FROM THE PROTOCOL'S"
	}
	rows := [][2]string{
		{"population", fmt.Sprintf("%d people, %d with the app, %d with a foreign GAEN app, %d days, seed %d", s.People, s.AppUsers, s.GAENOnlyPeople, s.Days, s.Seed)},
	}
	if s.Live {
		rows = append(rows, [2]string{"backend", fmt.Sprintf("running, real clock; days end yesterday; run nonce %s (counts not reproducible)", s.Nonce)})
	}
	rows = append(rows, [][2]string{
		{"answers", answersRow(s.DetailedAnswers)},
		{"infections", fmt.Sprint(s.Infections)},
		{"tests (positive)", fmt.Sprintf("%d (%d)", s.Tests, s.PositiveTests)},
		{"uploads", uploadsRow(s)},
		{"GAEN exports", fmt.Sprintf("%d cases in %d exports, %d keys imported", s.GAENCases, s.GAENExports, s.GAENKeysImported)},
		{"daily exchanges", fmt.Sprintf("%d: each phone's exposure check, with its result poll and upload when it has them", s.Checks)},
		{"", ""},
		{"protocol exact", exact},
		{"notified devices", fmt.Sprintf("%d (protocol says %d)", s.Notified, s.ShouldBeNotified)},
		{"notified by rule", fmt.Sprintf("%d reciprocal, %d one-sided", s.NotifiedReciprocal, s.NotifiedOneSided)},
		{"missed / false answers", fmt.Sprintf("%d / %d (%d answers differ in anything they carry)", s.MissedNotifications, s.FalseNotifications, s.MismatchedAnswers)},
		{"polls and uploads", fmt.Sprintf("%d answered wrong", s.ExchangeMismatches)},
		{"", ""},
		{"true close contacts", fmt.Sprintf("%d of cases who shared their keys (%d with the app)", s.TrueContacts, s.TrueContactsWithApp)},
		{"epi recall", fmt.Sprintf("%.1f%% of all, %.1f%% of app users", 100*s.EpiRecall, 100*s.EpiRecallAppUsers)},
		{"epi precision", fmt.Sprintf("%.1f%%", 100*s.EpiPrecision)},
		{"test to notification", fmt.Sprintf("median %.0f days", s.MedianDelayDays)},
		{"", ""},
		{"bytes/device/day", fmt.Sprintf("%.0f (GAEN-style: %.0f)", s.BytesPerDeviceDay, s.GAENBytesPerDeviceDay)},
		{"requests", fmt.Sprintf("%d (%.2f a device and day)", s.Requests, s.DeviceRequestsPerDay)},
		{"latency p50/p90/p99", fmt.Sprintf("%.1f / %.1f / %.1f ms (%s)", s.Timing.LatencyP50Ms, s.Timing.LatencyP90Ms, s.Timing.LatencyP99Ms, network)},
	}...)
	if o := s.OrderSummary; o != nil {
		i := slices.IndexFunc(rows, func(r [2]string) bool { return r[0] == "notified by rule" }) + 1
		rows = slices.Insert(rows, i, orderRows(o)...)
	}
	if s.NationalCheckBytes > 0 {
		i := slices.IndexFunc(rows, func(r [2]string) bool { return r[0] == "requests" })
		rows = slices.Insert(rows, i, [2]string{"at national scale", fmt.Sprintf("a phone with 2,000 sightings: %d bytes a day; a GAEN-style phone downloads more from %.0f positive cases a day",
			s.NationalCheckBytes, float64(s.NationalCheckBytes)/float64(GAENKeysPerCase*GAENBytesPerKey))})
	}
	if s.Timing.BackendRequests > 0 {
		rows = append(rows, [2]string{"backend p50/p90/p99", fmt.Sprintf("%.1f / %.1f / %.1f ms over %d requests served (in the backend's handler)", s.Timing.BackendP50Ms, s.Timing.BackendP90Ms, s.Timing.BackendP99Ms, s.Timing.BackendRequests)})
	}
	rows = append(rows, [2]string{"wall time", fmt.Sprintf("%.1f s", s.Timing.TotalSeconds)})
	if g := s.GPSSummary; g != nil {
		exact := "YES: every GPS answer was exactly the brute force's"
		if s.DetailedAnswers {
			exact = "YES: every GPS answer and episode was exactly the brute force's"
		}
		if !g.GPSProtocolExact {
			exact = "NO: THE BACKEND'S GPS ANSWERS DIFFER FROM THE BRUTE FORCE'S"
		}
		rows = append(rows[:len(rows)-4:len(rows)-4], append([][2]string{
			{"GPS exact", exact},
			{"GPS traces", fmt.Sprintf("%d uploaded (%d fixes), %d checks (%d fixes, every %d days)", g.GPSUploads, g.GPSUploadedPoints, g.GPSChecks, g.GPSCheckedPoints, g.GPSCheckEvery)},
			{"GPS notified", fmt.Sprintf("%d (brute force says %d); missed / false / differing answers %d / %d / %d", g.GPSNotified, g.GPSShouldBeNotified, g.GPSMissed, g.GPSFalse, g.GPSMismatchedAnswers)},
			{"", ""},
		}, rows[len(rows)-4:]...)...)
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

// answersRow says how precise the backend's answers were, and so what the
// oracle compared.
func answersRow(detailed bool) string {
	if detailed {
		return "detailed: every day's figures and the GPS episodes, all compared"
	}
	return "coarse: exposed, last exposed day, rules (--detailed-answers for every day's figures)"
}

// uploadsRow counts the uploads and how many the phones heard were
// durable.
func uploadsRow(s *Summary) string {
	if waiting := s.Uploads - s.UploadsDurable; waiting > 0 {
		return fmt.Sprintf("%d (%d durable by the phone's next exchange, %d awaiting that exchange)", s.Uploads, s.UploadsDurable, waiting)
	}
	return fmt.Sprintf("%d (all durable by the phone's next exchange)", s.Uploads)
}

// WriteHTML writes a self-contained report page with SVG charts.
func WriteHTML(w io.Writer, s *Summary) error {
	var b strings.Builder
	b.WriteString(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>conftrace demo</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse}td{padding:.2rem .8rem;border-bottom:1px solid #ddd}
.ok{color:#070;font-weight:bold}.bad{color:#b00;font-weight:bold}svg{display:block;margin:1rem 0}
.note{color:#555;font-size:13px}</style></head><body>
<h1>conftrace demo</h1>`)
	if s.ProtocolExact {
		b.WriteString(`<p class="ok">Protocol exact: every exposure answer was what the protocol requires, in everything it carries (0 missed, 0 false), every result poll and upload was answered as it should, and every GAEN import took the keys it should.</p>`)
	} else {
		fmt.Fprintf(&b, `<p class="bad">PROTOCOL MISMATCH: %d missed and %d false answers, %d answers differing in anything they carry, %d polls or uploads answered wrong, %d GAEN imports counted wrong.</p>`,
			s.MissedNotifications, s.FalseNotifications, s.MismatchedAnswers, s.ExchangeMismatches, s.GAENImportMismatches)
	}
	if g := s.GPSSummary; g != nil {
		if g.GPSProtocolExact {
			fmt.Fprintf(&b, `<p class="ok">GPS exact: every one of %d trace checks was answered as the brute force requires.</p>`, g.GPSChecks)
		} else {
			fmt.Fprintf(&b, `<p class="bad">GPS MISMATCH: %d missed, %d false, %d answers differing in anything they carry.</p>`, g.GPSMissed, g.GPSFalse, g.GPSMismatchedAnswers)
		}
	}
	b.WriteString("<table>")
	var tbl strings.Builder
	WriteTable(&tbl, s)
	for _, line := range strings.Split(strings.TrimRight(tbl.String(), "\n"), "\n") {
		k, v, _ := strings.Cut(line, "  ")
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td></tr>", html.EscapeString(strings.TrimSpace(k)), html.EscapeString(strings.TrimSpace(v)))
	}
	b.WriteString("</table>")

	series := []struct {
		name, color string
		v           func(Day) int
	}{
		{"infections", "#d62728", func(d Day) int { return d.Infections }},
		{"tests", "#1f77b4", func(d Day) int { return d.Tests }},
		{"uploads", "#ff7f0e", func(d Day) int { return d.Uploads }},
		{"newly notified", "#2ca02c", func(d Day) int { return d.NewlyNotified }},
	}
	b.WriteString("<h2>Per day</h2>")
	lineChart(&b, s.Daily, series)
	b.WriteString("<h2>Notified devices by rule</h2>")
	barChart(&b, []string{"reciprocal", "one-sided"}, []float64{float64(s.NotifiedReciprocal), float64(s.NotifiedOneSided)}, "#9467bd")
	b.WriteString(`<p class="note">Devices told "exposed" with the rule among those that matched on their exposed days: reciprocally (an uploading case's phone recorded this one in the same encounter) or one-sided (this phone heard an identifier of an imported GAEN key, or of an uploaded key if the policy allows). A device can count under both.</p>`)
	if o := s.OrderSummary; o != nil {
		b.WriteString("<h2>Notified devices by order</h2>")
		var labels []string
		var counts []float64
		for k := 1; k <= o.MaxOrder; k++ {
			labels, counts = append(labels, fmt.Sprintf("order %d", k)), append(counts, float64(o.NotifiedByOrder[k]))
		}
		barChart(&b, labels, counts, "#8c564b")
		fmt.Fprintf(&b, `<p class="note">Devices told "exposed" at each order at least once (max_order %d): order 1 by a case's upload, order k+1 by the upload of a phone exposed at order k whose user consented. Of %d true second-order infections (people infected by someone an index case infected), %d ran the app and %d were told "exposed" (recall %.1f%% of all, %.1f%% of app users); %d of them only at order 2 or more, notifications that n-order added.</p>`,
			o.MaxOrder, o.SecondOrderInfections, o.SecondOrderInfectionsWithApp, o.NotifiedSecondOrderInfections, 100*o.SecondOrderRecall, 100*o.SecondOrderRecallAppUsers, o.SecondOrderNotifiedOnlyByNOrder)
	}
	b.WriteString("<h2>Test to notification</h2>")
	labels := make([]string, len(s.NotificationDelayDays))
	for i := range labels {
		labels[i] = fmt.Sprintf("%d d", i)
	}
	barChart(&b, labels, toFloat(s.NotificationDelayDays), "#2ca02c")
	b.WriteString(`<p class="note">Devices by days from the test of the case that exposed them to their first notification.</p>`)
	b.WriteString("<h2>Bandwidth per device and day</h2>")
	barChart(&b, []string{"conftrace", "GAEN-style"}, []float64{s.BytesPerDeviceDay, s.GAENBytesPerDeviceDay}, "#1f77b4")
	b.WriteString(`<p class="note">In this town, whose few cases publish few keys: what an app user's phone sent and received a day, beside what it would have downloaded had every published key been sent to every phone.</p>`)
	b.WriteString("<h2>Bandwidth at national scale</h2>")
	nationalChart(&b, s)
	fmt.Fprintf(&b, `<p class="note">Bytes a phone spends a day against the positive cases a day in the whole country, both axes logarithmic. A GAEN-style phone downloads every published key: %d keys a case, %d bytes a key. A conftrace phone makes one exchange a day, whose size follows how many encounters it logged and not how many cases there are: measured for this town's phones and, against the same backend after the run, for a phone with 2,000 sightings. Where a conftrace line meets the GAEN line (marked), the two cost the same; to the right, conftrace costs less.</p>`,
		GAENKeysPerCase, GAENBytesPerKey)
	b.WriteString("<h2>Definitions</h2><dl>")
	for _, k := range sortedKeys(s.Definitions) {
		fmt.Fprintf(&b, "<dt><code>%s</code></dt><dd>%s</dd>", html.EscapeString(k), html.EscapeString(s.Definitions[k]))
	}
	b.WriteString("</dl></body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

const chartW, chartH, pad = 720, 260, 40

// National cases a day, and bytes a phone-day, on the national chart's
// logarithmic axes, as powers of ten.
const (
	minCasesExp, maxCasesExp = 0, 5
	minBytesExp, maxBytesExp = 2, 8
)

// nationalChart draws, on logarithmic axes, a GAEN-style phone's download
// a day against the national positive cases a day, and conftrace's
// measured exchanges a day, which do not depend on them, with the points
// where they cross.
func nationalChart(b *strings.Builder, s *Summary) {
	perCase := float64(GAENKeysPerCase * GAENBytesPerKey)
	x := func(cases float64) float64 {
		return pad + (math.Log10(cases)-minCasesExp)*float64(chartW-2*pad)/(maxCasesExp-minCasesExp)
	}
	y := func(bytes float64) float64 {
		return chartH - pad - (math.Log10(bytes)-minBytesExp)*float64(chartH-2*pad)/(maxBytesExp-minBytesExp)
	}
	type level struct {
		name, color string
		bytes       float64
	}
	lines := []level{{"conftrace, this town's phones", "#1f77b4", s.BytesPerDeviceDay}}
	if s.NationalCheckBytes > 0 {
		lines = append(lines, level{"conftrace, a phone with 2,000 sightings", "#9467bd", float64(s.NationalCheckBytes)})
	}
	height := chartH + 20 + 20*(len(lines)+1)
	fmt.Fprintf(b, `<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img">`, chartW, height, chartW, height)
	logAxes(b, x, y)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#d62728" stroke-width="2"><title>GAEN-style: %.0f bytes a case</title></line>`,
		x(1), y(perCase), x(math.Pow10(maxCasesExp)), y(perCase*math.Pow10(maxCasesExp)), perCase)
	legend(b, 0, "#d62728", fmt.Sprintf("GAEN-style: %d keys a case × %d bytes", GAENKeysPerCase, GAENBytesPerKey))
	for k, l := range lines {
		if l.bytes <= 0 {
			continue
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`, x(1), y(l.bytes), x(math.Pow10(maxCasesExp)), y(l.bytes), l.color)
		legend(b, k+1, l.color, fmt.Sprintf("%s: %.0f bytes a day", l.name, l.bytes))
		cross := l.bytes / perCase
		if cross < 1 || cross > math.Pow10(maxCasesExp) {
			continue
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-dasharray="4 3"/>`, x(cross), pad, x(cross), chartH-pad, l.color)
		fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="5" fill="%s"><title>crossover: %.0f cases a day</title></circle>`, x(cross), y(l.bytes), l.color, cross)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="11" fill="%s">crossover: %.0f cases a day</text>`, x(cross)+6, y(l.bytes)-8, l.color, cross)
	}
	b.WriteString("</svg>")
}

// logAxes draws the national chart's axes with a tick at every power of
// ten.
func logAxes(b *strings.Builder, x, y func(float64) float64) {
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>`, pad, chartH-pad, chartW-pad, chartH-pad)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>`, pad, pad, pad, chartH-pad)
	for e := minCasesExp; e <= maxCasesExp; e++ {
		fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%s</text>`, x(math.Pow10(e)), chartH-pad+15, humanCount(math.Pow10(e)))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="11" text-anchor="end">positive cases a day, nationally</text>`, chartW-pad, chartH-pad+30)
	for e := minBytesExp; e <= maxBytesExp; e++ {
		fmt.Fprintf(b, `<text x="%d" y="%.1f" font-size="11" text-anchor="end">%sB</text>`, pad-4, y(math.Pow10(e))+4, humanCount(math.Pow10(e)))
	}
}

// legend writes the k-th entry of a chart's legend, below its axes.
func legend(b *strings.Builder, k int, color, text string) {
	ly := chartH + 10 + 20*k
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d" font-size="13">%s</text>`, pad, ly, color, pad+18, ly+11, html.EscapeString(text))
}

// humanCount writes a power of ten as 1, 10, 100, 1k … 100M.
func humanCount(v float64) string {
	for _, u := range []struct {
		div    float64
		suffix string
	}{{1e6, "M"}, {1e3, "k"}} {
		if v >= u.div {
			return fmt.Sprintf("%.0f%s", v/u.div, u.suffix)
		}
	}
	return fmt.Sprintf("%.0f", v)
}

func lineChart(b *strings.Builder, days []Day, series []struct {
	name, color string
	v           func(Day) int
}) {
	top := 1
	for _, d := range days {
		for _, s := range series {
			top = max(top, s.v(d))
		}
	}
	n := max(1, len(days)-1)
	x := func(i int) float64 { return pad + float64(i)*float64(chartW-2*pad)/float64(n) }
	y := func(v int) float64 { return chartH - pad - float64(v)*float64(chartH-2*pad)/float64(top) }
	fmt.Fprintf(b, `<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img">`, chartW, chartH+20*len(series), chartW, chartH+20*len(series))
	axes(b, fmt.Sprint(top))
	for i, d := range days {
		if i%7 == 0 {
			fmt.Fprintf(b, `<text x="%.0f" y="%d" font-size="11" text-anchor="middle">%s</text>`, x(i), chartH-pad+15, d.Date)
		}
	}
	for k, s := range series {
		var pts []string
		for i, d := range days {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(s.v(d))))
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, s.color, strings.Join(pts, " "))
		ly := chartH + 20*k
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d" font-size="13">%s</text>`, pad, ly, s.color, pad+18, ly+11, s.name)
	}
	b.WriteString("</svg>")
}

func barChart(b *strings.Builder, labels []string, vals []float64, color string) {
	top := 1.0
	for _, v := range vals {
		top = max(top, v)
	}
	fmt.Fprintf(b, `<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img">`, chartW, chartH, chartW, chartH)
	axes(b, fmt.Sprintf("%.0f", top))
	if len(vals) == 0 {
		fmt.Fprintf(b, `<text x="%d" y="%d">no data</text></svg>`, chartW/2, chartH/2)
		return
	}
	slot := float64(chartW-2*pad) / float64(len(vals))
	for i, v := range vals {
		h := v * float64(chartH-2*pad) / top
		x := pad + float64(i)*slot
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s: %.0f</title></rect>`, x+slot*0.1, chartH-pad-h, slot*0.8, h, color, html.EscapeString(labels[i]), v)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%s</text>`, x+slot/2, chartH-pad+15, html.EscapeString(labels[i]))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%.0f</text>`, x+slot/2, chartH-pad-h-4, v)
	}
	b.WriteString("</svg>")
}

func axes(b *strings.Builder, top string) {
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>`, pad, chartH-pad, chartW-pad, chartH-pad)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>`, pad, pad, pad, chartH-pad)
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="11" text-anchor="end">%s</text><text x="%d" y="%d" font-size="11" text-anchor="end">0</text>`, pad-4, pad+4, top, pad-4, chartH-pad)
}

func toFloat(v []int) []float64 {
	f := make([]float64, len(v))
	for i, x := range v {
		f[i] = float64(x)
	}
	return f
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
