package transparency

import (
	"errors"
	"fmt"
	"html"
	"html/template"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The bar chart's geometry, in SVG user units. It is drawn about as wide
// as a phone's screen, so that its type stays readable there; it scales
// to the page's columns on a desktop.
const (
	chartWidth  = 360
	chartHeight = 240
	chartLeft   = 44 // room for the value axis's labels
	chartRight  = 8
	chartTop    = 40 // room for the title
	chartBottom = 36 // room for the day labels
	chartFont   = 14
	// maxDayLabels is how many day labels fit under the bars.
	maxDayLabels = 4
	// MaxChartDays bounds the days one chart shows.
	MaxChartDays = 366
	// MaxChartValue bounds the values' magnitude: far above any count,
	// and far enough below the largest float that the axis stays finite.
	MaxChartValue = 1e12
)

// Colours meet WCAG AA against white: text 16:1, bars 8:1, axis 8:1.
const (
	chartText = "#1b1b1b"
	chartBar  = "#0b4f9c"
	chartAxis = "#4a4a4a"
	chartGrid = "#d0d0d0"
)

// BarChart renders one bar a day as an inline SVG image: title above,
// values up the side, days along the bottom (a few of them, evenly
// spaced, when they do not all fit), and each bar's day and value in its
// tooltip. It is labelled for screen readers by its title and a summary
// (the days covered, the lowest and highest value); pages should give
// the values as a table too. Values may be negative (noisy counts can
// be): bars then grow down from zero. It refuses no days, more than
// MaxChartDays, labels and values of different lengths, and values that
// are not numbers or beyond ±MaxChartValue.
func BarChart(title string, days []string, values []float64) (template.HTML, error) {
	switch {
	case len(days) == 0:
		return "", errors.New("transparency: a chart of no days")
	case len(days) > MaxChartDays:
		return "", fmt.Errorf("transparency: a chart of %d days, limit %d", len(days), MaxChartDays)
	case len(days) != len(values):
		return "", fmt.Errorf("transparency: %d day labels for %d values", len(days), len(values))
	}
	lo, hi := 0.0, 0.0
	whole := true
	for i, v := range values {
		if math.IsNaN(v) || math.Abs(v) > MaxChartValue {
			return "", fmt.Errorf("transparency: the value of %q is %v, want a number within ±%g", days[i], v, MaxChartValue)
		}
		lo, hi = min(lo, v), max(hi, v)
		whole = whole && v == math.Trunc(v)
	}
	ticks := axisTicks(lo, hi, whole)
	lo, hi = min(lo, ticks[0]), max(hi, ticks[len(ticks)-1])
	const plotW, plotH = chartWidth - chartLeft - chartRight, chartHeight - chartTop - chartBottom
	y := func(v float64) float64 { return chartTop + plotH*(hi-v)/(hi-lo) }

	var b strings.Builder
	esc := func(s string) string { return html.EscapeString(xmlText(s)) }
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 %d %d" role="img" aria-label="%s" font-family="system-ui, sans-serif" font-size="%d">`,
		chartWidth, chartHeight, esc(title), chartFont)
	fmt.Fprintf(&b, `<title>%s</title><desc>%s</desc>`, esc(title), esc(summary(days, values)))
	fmt.Fprintf(&b, `<text x="0" y="%d" fill="%s" font-weight="bold" font-size="%d">%s</text>`, chartFont+4, chartText, chartFont+2, esc(title))
	decimals := tickDecimals(ticks)
	for _, t := range ticks {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%s" y2="%s" stroke="%s" stroke-width="1"/>`,
			chartLeft, chartWidth-chartRight, num(y(t)), num(y(t)), chartGrid)
		fmt.Fprintf(&b, `<text x="%d" y="%s" fill="%s" text-anchor="end" dominant-baseline="middle">%s</text>`,
			chartLeft-6, num(y(t)), chartText, strconv.FormatFloat(t, 'f', decimals, 64))
	}
	slot := float64(plotW) / float64(len(values))
	bar := max(slot*0.8, 1)
	every := (len(days) + maxDayLabels - 1) / maxDayLabels
	for i, v := range values {
		x := chartLeft + slot*float64(i) + (slot-bar)/2
		top, bottom := y(max(v, 0)), y(min(v, 0))
		fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s: %s</title></rect>`,
			num(x), num(top), num(bar), num(bottom-top), chartBar, esc(days[i]), esc(Value(v)))
		if i%every == 0 {
			fmt.Fprintf(&b, `<text x="%s" y="%d" fill="%s" text-anchor="middle">%s</text>`,
				num(x+bar/2), chartHeight-chartBottom+chartFont+6, chartText, esc(days[i]))
		}
	}
	// The zero line, over the bars, so that negative values read as such.
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%s" y2="%s" stroke="%s" stroke-width="1.5"/>`,
		chartLeft, chartWidth-chartRight, num(y(0)), num(y(0)), chartAxis)
	b.WriteString(`</svg>`)
	// Every piece of text above is escaped, and every number formatted
	// here: the markup is safe to embed.
	return template.HTML(b.String()), nil
}

// summary describes a chart's data in one sentence, for screen readers.
func summary(days []string, values []float64) string {
	lo, hi := values[0], values[0]
	for _, v := range values {
		lo, hi = min(lo, v), max(hi, v)
	}
	if len(days) == 1 {
		return fmt.Sprintf("One day, %s: %s.", days[0], Value(values[0]))
	}
	return fmt.Sprintf("%d days, from %s to %s; lowest %s, highest %s.", len(days), days[0], days[len(days)-1], Value(lo), Value(hi))
}

// axisTicks returns 2 to about 6 evenly spaced round values (1, 2 or 5
// times a power of ten apart) that cover lo to hi, lo <= 0 <= hi; whole
// numbers only when whole is set (counts).
func axisTicks(lo, hi float64, whole bool) []float64 {
	if hi-lo == 0 {
		hi = 1
	}
	raw := (hi - lo) / 4
	if whole {
		raw = max(raw, 1)
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	first, last := math.Floor(lo/step), math.Ceil(hi/step)
	var ticks []float64
	for i := first; i <= last; i++ {
		ticks = append(ticks, i*step)
	}
	return ticks
}

// tickDecimals is how many decimals tell the ticks apart.
func tickDecimals(ticks []float64) int {
	if len(ticks) < 2 {
		return 0
	}
	step := ticks[1] - ticks[0]
	return max(0, int(-math.Floor(math.Log10(step)+1e-9)))
}

// num formats an SVG coordinate.
func num(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// Value formats a chart value: whole numbers as such, others to one
// decimal.
func Value(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// xmlText drops what XML cannot carry (control characters, invalid
// UTF-8, U+FFFE and U+FFFF), so that a chart stays well formed whatever
// its labels.
func xmlText(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == utf8.RuneError, r < 0x20 && r != '\t' && r != '\n' && r != '\r', r == 0xFFFE, r == 0xFFFF, 0xD800 <= r && r <= 0xDFFF:
			return -1
		}
		return r
	}, s)
}
