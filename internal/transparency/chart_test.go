package transparency

import (
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// svgElement is what the tests read of a chart's elements.
type svgElement struct {
	name  string
	attrs map[string]string
	text  string
}

// parseSVG parses a chart as XML, which also proves it well formed, and
// returns its elements in document order.
func parseSVG(t *testing.T, svg string) []svgElement {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(svg))
	var els []svgElement
	var open []int
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the chart is not well-formed XML: %v\n%s", err, svg)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			e := svgElement{name: tok.Name.Local, attrs: map[string]string{}}
			for _, a := range tok.Attr {
				e.attrs[a.Name.Local] = a.Value
			}
			els = append(els, e)
			open = append(open, len(els)-1)
		case xml.CharData:
			if len(open) > 0 {
				els[open[len(open)-1]].text += string(tok)
			}
		case xml.EndElement:
			open = open[:len(open)-1]
		}
	}
	if len(els) == 0 || els[0].name != "svg" {
		t.Fatalf("the chart is not an svg element: %s", svg)
	}
	return els
}

func attr(t *testing.T, e svgElement, name string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(e.attrs[name], 64)
	if err != nil {
		t.Fatalf("%s %s=%q: %v", e.name, name, e.attrs[name], err)
	}
	return v
}

func days(n int) []string {
	var d []string
	for i := range n {
		d = append(d, fmt.Sprintf("2026-03-%02d", i+1))
	}
	return d
}

func TestBarChart(t *testing.T) {
	values := []float64{3, 0, 12, 7.5}
	svg, err := BarChart("Uploads", days(4), values)
	if err != nil {
		t.Fatal(err)
	}
	els := parseSVG(t, string(svg))
	root := els[0]
	if root.attrs["role"] != "img" || root.attrs["aria-label"] != "Uploads" {
		t.Errorf("svg is not labelled as an image: %v", root.attrs)
	}
	var bars []svgElement
	var labels, tooltips []string
	for _, e := range els {
		switch e.name {
		case "rect":
			bars = append(bars, e)
		case "title":
			tooltips = append(tooltips, e.text)
		case "text":
			labels = append(labels, e.text)
		case "desc":
			if e.text != "4 days, from 2026-03-01 to 2026-03-04; lowest 0, highest 12." {
				t.Errorf("description %q", e.text)
			}
		}
	}
	if len(bars) != 4 {
		t.Fatalf("%d bars, want 4", len(bars))
	}
	if want := []string{"Uploads", "2026-03-01: 3", "2026-03-02: 0", "2026-03-03: 12", "2026-03-04: 7.5"}; !slices.Equal(tooltips, want) {
		t.Errorf("titles %q, want %q", tooltips, want)
	}
	for _, want := range []string{"Uploads", "0", "2026-03-01", "2026-03-04"} {
		if !slices.Contains(labels, want) {
			t.Errorf("no label %q among %q", want, labels)
		}
	}
	// Bar heights are proportional to the values, on one baseline.
	unit := attr(t, bars[2], "height") / 12
	for i, b := range bars {
		if h := attr(t, b, "height"); math.Abs(h-values[i]*unit) > 0.02 {
			t.Errorf("bar %d is %.2f high, want %.2f", i, h, values[i]*unit)
		}
		if bottom := attr(t, b, "y") + attr(t, b, "height"); math.Abs(bottom-(attr(t, bars[2], "y")+attr(t, bars[2], "height"))) > 0.02 {
			t.Errorf("bar %d ends at %.2f, not on the baseline", i, bottom)
		}
		if x := attr(t, b, "x"); x < chartLeft || x+attr(t, b, "width") > chartWidth-chartRight {
			t.Errorf("bar %d at x %.2f is outside the plot", i, x)
		}
	}
	if !(attr(t, bars[0], "x") < attr(t, bars[1], "x")) {
		t.Error("bars are not in day order")
	}
}

func TestBarChartNegativeValues(t *testing.T) {
	// Noisy counts can be negative: their bars hang below the zero line.
	svg, err := BarChart("Noisy", days(2), []float64{-4, 8})
	if err != nil {
		t.Fatal(err)
	}
	var bars []svgElement
	var zero float64
	for _, e := range parseSVG(t, string(svg)) {
		switch {
		case e.name == "rect":
			bars = append(bars, e)
		case e.name == "line" && e.attrs["stroke-width"] == "1.5":
			zero = attr(t, e, "y1")
		}
	}
	if len(bars) != 2 {
		t.Fatalf("%d bars", len(bars))
	}
	if y := attr(t, bars[0], "y"); math.Abs(y-zero) > 0.02 {
		t.Errorf("the negative bar starts at %.2f, not at the zero line %.2f", y, zero)
	}
	if end := attr(t, bars[1], "y") + attr(t, bars[1], "height"); math.Abs(end-zero) > 0.02 {
		t.Errorf("the positive bar ends at %.2f, not at the zero line %.2f", end, zero)
	}
	if r := attr(t, bars[1], "height") / attr(t, bars[0], "height"); math.Abs(r-2) > 0.01 {
		t.Errorf("bars of 8 and -4 are %.2f times as high, want 2", r)
	}
}

func TestBarChartEscapes(t *testing.T) {
	svg, err := BarChart(`<script>alert("t")</script>`, []string{`"><img src=x>`}, []float64{1})
	if err != nil {
		t.Fatal(err)
	}
	s := string(svg)
	if strings.Contains(s, "<script") || strings.Contains(s, "<img") {
		t.Fatalf("markup in the labels reached the chart: %s", s)
	}
	els := parseSVG(t, s)
	if els[0].attrs["aria-label"] != `<script>alert("t")</script>` {
		t.Errorf("aria-label %q", els[0].attrs["aria-label"])
	}
}

func TestBarChartManyDays(t *testing.T) {
	// Sixty days: every bar, and a few day labels that fit.
	values := make([]float64, 60)
	for i := range values {
		values[i] = float64(i * i)
	}
	svg, err := BarChart("Checks", days(60), values)
	if err != nil {
		t.Fatal(err)
	}
	var bars, dayLabels int
	for _, e := range parseSVG(t, string(svg)) {
		switch {
		case e.name == "rect":
			bars++
		case e.name == "text" && strings.HasPrefix(e.text, "2026-"):
			dayLabels++
		}
	}
	if bars != 60 || dayLabels < 2 || dayLabels > maxDayLabels {
		t.Errorf("%d bars and %d day labels, want 60 and 2 to %d", bars, dayLabels, maxDayLabels)
	}
}

func TestAxisTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		whole  bool
		want   []float64
	}{
		{0, 12, true, []float64{0, 5, 10, 15}},
		{0, 0, false, []float64{0, 0.5, 1}},
		{0, 1, false, []float64{0, 0.5, 1}},
		// Counts get whole ticks, however small they are.
		{0, 0, true, []float64{0, 1}},
		{0, 2, true, []float64{0, 1, 2}},
		{-4, 8, true, []float64{-5, 0, 5, 10}},
		{0, 1234, true, []float64{0, 500, 1000, 1500}},
		{0, 0.3, false, []float64{0, 0.1, 0.2, 0.30000000000000004}},
	} {
		got := axisTicks(tc.lo, tc.hi, tc.whole)
		if !slices.Equal(got, tc.want) {
			t.Errorf("ticks of %v..%v: %v, want %v", tc.lo, tc.hi, got, tc.want)
		}
		if got[0] > tc.lo || got[len(got)-1] < tc.hi || len(got) > 7 {
			t.Errorf("ticks of %v..%v: %v do not cover it in at most 7", tc.lo, tc.hi, got)
		}
	}
	if d := tickDecimals([]float64{0, 0.1, 0.2}); d != 1 {
		t.Errorf("decimals of a 0.1 step: %d", d)
	}
	if d := tickDecimals([]float64{0, 500}); d != 0 {
		t.Errorf("decimals of a 500 step: %d", d)
	}
}

func TestBarChartRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		days   []string
		values []float64
	}{
		"no days":       {nil, nil},
		"mismatch":      {days(2), []float64{1}},
		"NaN":           {days(1), []float64{math.NaN()}},
		"infinite":      {days(1), []float64{math.Inf(-1)}},
		"huge":          {days(1), []float64{2 * MaxChartValue}},
		"too many days": {make([]string, MaxChartDays+1), make([]float64, MaxChartDays+1)},
	} {
		if _, err := BarChart("x", tc.days, tc.values); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func FuzzBarChart(f *testing.F) {
	f.Add("Uploads", "2026-03-01", 3.0, -2.5)
	f.Add("<x>", "\"&'", 0.0, 0.0)
	f.Add("", "", 1e12, -1e12)
	f.Fuzz(func(t *testing.T, title, day string, a, b float64) {
		svg, err := BarChart(title, []string{day, day}, []float64{a, b})
		if err != nil {
			return
		}
		parseSVG(t, string(svg))
		if strings.Contains(string(svg), "NaN") || strings.Contains(string(svg), "Inf") {
			t.Fatalf("non-finite coordinates: %s", svg)
		}
	})
}
