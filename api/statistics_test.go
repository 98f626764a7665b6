package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// goodStatistics is an answer of two days, the second partial.
func goodStatistics() Statistics {
	return Statistics{Days: []StatisticsDay{
		{Date: "2026-03-09", Mechanism: "discrete_laplace", Epsilon: 0.5, Releases: 2, Counts: []NoisyCount{
			{Name: CountChecks, Value: 1040, Sensitivity: 1, NoiseStdDev: 3.96},
			{Name: CountExposed(1), Value: 12, Sensitivity: 1, NoiseStdDev: 3.96},
			{Name: CountGAENKeysImported, Value: 0, Sensitivity: 30, NoiseStdDev: 120},
		}},
		{Date: "2026-03-10", Mechanism: "discrete_laplace", Epsilon: 0.5, Releases: 1, Partial: true, Counts: []NoisyCount{}},
	}}
}

func TestParseStatistics(t *testing.T) {
	want := goodStatistics()
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseStatistics(b)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseStatistics = %+v, %v; want %+v", got, err, want)
	}
	if v, ok := got.Days[0].Value(CountExposed(1)); !ok || v != 12 {
		t.Errorf("Value(exposed_order_1) = %d, %v", v, ok)
	}
	if _, ok := got.Days[0].Value(CountUploads); ok {
		t.Error("Value of a count the day lacks")
	}
	for name, edit := range map[string]func(*Statistics){
		"bad date":        func(s *Statistics) { s.Days[0].Date = "2026-3-9" },
		"days repeated":   func(s *Statistics) { s.Days[1].Date = s.Days[0].Date },
		"days descending": func(s *Statistics) { s.Days[0], s.Days[1] = s.Days[1], s.Days[0] },
		"no mechanism":    func(s *Statistics) { s.Days[0].Mechanism = "" },
		"ε 0":             func(s *Statistics) { s.Days[0].Epsilon = 0 },
		"no release":      func(s *Statistics) { s.Days[0].Releases = 0 },
		"unknown count":   func(s *Statistics) { s.Days[0].Counts[0].Name = "raw_checks" },
		"order 4":         func(s *Statistics) { s.Days[0].Counts[1].Name = "exposed_order_4" },
		"count repeated":  func(s *Statistics) { s.Days[0].Counts[1].Name = CountChecks },
		"counts out of order": func(s *Statistics) {
			s.Days[0].Counts[0], s.Days[0].Counts[1] = s.Days[0].Counts[1], s.Days[0].Counts[0]
		},
		"negative value":     func(s *Statistics) { s.Days[0].Counts[0].Value = -1 },
		"sensitivity 0":      func(s *Statistics) { s.Days[0].Counts[0].Sensitivity = 0 },
		"negative deviation": func(s *Statistics) { s.Days[0].Counts[0].NoiseStdDev = -1 },
	} {
		s := goodStatistics()
		edit(&s)
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseStatistics(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for name, doc := range map[string]string{
		"unknown field": `{"days":[],"raw":1}`,
		"trailing data": `{"days":[]} {}`,
		"too large":     `{"days":[]}` + strings.Repeat(" ", MaxStatisticsSize),
	} {
		if _, err := ParseStatistics([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Every count has a title; names that are not counts have none.
func TestStatisticsCountTitles(t *testing.T) {
	for _, n := range StatisticsCountNames() {
		if StatisticsCountTitle(n) == "" {
			t.Errorf("count %q has no title", n)
		}
	}
	for _, n := range []string{"", "exposed_order_0", "exposed_order_4", "exposed_order_12", "raw"} {
		if StatisticsCountTitle(n) != "" {
			t.Errorf("%q has a title", n)
		}
	}
}

// FuzzParseStatistics: any bytes parse or are refused without panic, and
// what parses encodes to an answer that parses to the same.
func FuzzParseStatistics(f *testing.F) {
	b, _ := json.Marshal(goodStatistics())
	f.Add(b)
	f.Add([]byte(`{"days":[]}`))
	f.Add([]byte(`{"days":[{"date":"2026-03-10","mechanism":"m","epsilon":1e308,"releases":1,"partial":true,"counts":[{"name":"gps_matches","value":9223372036854775807,"sensitivity":1,"noise_std_dev":0}]}]}`))
	f.Add([]byte(`{"days":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStatistics(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := ParseStatistics(again)
		if err != nil || !reflect.DeepEqual(s, s2) {
			t.Errorf("re-encoded answer: %+v, %v; first %+v", s2, err, s)
		}
	})
}
