package transparency

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	teesim "github.com/conftrace/conftrace/internal/tee/sim"
	"github.com/conftrace/conftrace/policy"
)

// testStatistics are three released days, the first counted in part.
var testStatistics = api.Statistics{Days: []api.StatisticsDay{
	{Date: "2026-03-01", Mechanism: policy.MechanismDiscreteLaplace, Epsilon: 0.5, Releases: 1, Partial: true, Counts: []api.NoisyCount{
		{Name: api.CountUploads, Value: 3, Sensitivity: 1, NoiseStdDev: 2.83},
		{Name: api.CountChecks, Value: 950, Sensitivity: 2, NoiseStdDev: 5.66},
	}},
	{Date: "2026-03-02", Mechanism: policy.MechanismDiscreteLaplace, Epsilon: 0.5, Releases: 1, Counts: []api.NoisyCount{
		{Name: api.CountUploads, Value: 0, Sensitivity: 1, NoiseStdDev: 2.83},
		{Name: api.CountChecks, Value: 1012, Sensitivity: 2, NoiseStdDev: 5.66},
	}},
	{Date: "2026-03-03", Mechanism: policy.MechanismDiscreteLaplace, Epsilon: 0.5, Releases: 2, Counts: []api.NoisyCount{
		{Name: api.CountChecks, Value: 987, Sensitivity: 2, NoiseStdDev: 5.66},
	}},
}}

func TestChartsOf(t *testing.T) {
	charts := ChartsOf(testStatistics)
	if len(charts) != 2 {
		t.Fatalf("%d charts, want uploads and checks", len(charts))
	}
	up, checks := charts[0], charts[1]
	if up.Title != "Uploads" || strings.Join(up.Days, " ") != "2026-03-01* 2026-03-02" || len(up.Values) != 2 || up.Values[0] != 3 {
		t.Errorf("uploads chart %+v", up)
	}
	if checks.Title != "Exposure checks" || len(checks.Days) != 3 || checks.Values[2] != 987 {
		t.Errorf("checks chart %+v", checks)
	}
	for _, want := range []string{"ε = 0.5 a day", "up to 5.7", "* The backend counted only part of that day"} {
		if !strings.Contains(checks.Note, want) {
			t.Errorf("note %q lacks %q", checks.Note, want)
		}
	}
	if len(ChartsOf(api.Statistics{})) != 0 {
		t.Error("charts of no days")
	}
}

// statsPolicy is the default policy, releasing statistics.
func statsPolicy(t *testing.T) []byte {
	p := policy.Default()
	p.Statistics = policy.NewStatistics(500)
	return canonical(t, p)
}

func TestStatisticsOnThePage(t *testing.T) {
	b := testBundle(t, statsPolicy(t), nil, teesim.Options{Measurement: testMeasurement})
	pg := New(b, func(context.Context) (api.Statistics, error) { return testStatistics, nil }, nil)
	_, page := get(t, pg, "backend.example")
	if n := strings.Count(page, "<svg "); n != 2 {
		t.Errorf("%d charts on the page, want 2", n)
	}
	txt := text(page)
	mustContain(t, txt, "Uploads: the values", "2026-03-01* 3", "Exposure checks: the values", "2026-03-03 987",
		"Counts with differentially private noise (ε = 0.5 a day)")
	mustNotContain(t, txt, "No day's statistics have been released yet", "could not be read")
}

func TestStatisticsStates(t *testing.T) {
	b := testBundle(t, statsPolicy(t), nil, teesim.Options{Measurement: testMeasurement})
	for _, tc := range []struct {
		name  string
		stats StatisticsFunc
		want  string
	}{
		{"none released", func(context.Context) (api.Statistics, error) { return api.Statistics{}, nil }, "No day's statistics have been released yet"},
		{"read fails", func(context.Context) (api.Statistics, error) {
			return api.Statistics{}, errors.New("store: disk on fire")
		}, "The statistics could not be read just now."},
		{"not read", nil, "This page draws no statistics."},
	} {
		_, page := get(t, New(b, tc.stats, nil), "backend.example")
		mustContain(t, text(page), tc.want)
		// The reason of a failure stays in the log.
		mustNotContain(t, page, "disk on fire", "<svg ")
	}
	b = testBundle(t, canonical(t, policy.Default()), nil, teesim.Options{Measurement: testMeasurement})
	off := func(context.Context) (api.Statistics, error) {
		return api.Statistics{}, api.Errorf(api.CodeNotFound, "the attested policy releases no statistics")
	}
	_, page := get(t, New(b, off, nil), "backend.example")
	mustContain(t, text(page), "Public statistics The policy releases no statistics.")
	mustNotContain(t, text(page), "could not be read")
}

func TestStatisticsReadAtMostEveryTTL(t *testing.T) {
	// A page view does not scan the store each time: the statistics are
	// read again only after statisticsTTL, and the page then shows the
	// new ones.
	b := testBundle(t, statsPolicy(t), nil, teesim.Options{Measurement: testMeasurement})
	var mu sync.Mutex
	reads, value := 0, int64(3)
	pg := New(b, func(context.Context) (api.Statistics, error) {
		mu.Lock()
		defer mu.Unlock()
		reads++
		return api.Statistics{Days: []api.StatisticsDay{{Date: "2026-03-01", Mechanism: "discrete_laplace", Epsilon: 1, Releases: 1,
			Counts: []api.NoisyCount{{Name: api.CountUploads, Value: value, Sensitivity: 1, NoiseStdDev: 1.4}}}}}, nil
	}, nil)
	now := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	pg.stats.now = func() time.Time { return now }
	for range 5 {
		get(t, pg, "backend.example")
	}
	mu.Lock()
	value = 42
	mu.Unlock()
	now = now.Add(statisticsTTL - time.Second)
	_, page := get(t, pg, "backend.example")
	if reads != 1 || !strings.Contains(text(page), "2026-03-01 3") {
		t.Fatalf("%d reads within the TTL, want 1", reads)
	}
	now = now.Add(2 * time.Second)
	_, page = get(t, pg, "backend.example")
	if reads != 2 || !strings.Contains(text(page), "2026-03-01 42") {
		t.Errorf("%d reads after the TTL, want 2, and the new value on the page", reads)
	}
}

func TestChartThatFailsToDraw(t *testing.T) {
	cv := newChartView(Chart{Title: "Broken", Days: days(2), Values: []float64{1}})
	if cv.SVG != "" || !strings.Contains(cv.Problem, "2 day labels for 1 values") {
		t.Errorf("%+v", cv)
	}
}
