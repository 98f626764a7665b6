package policy

import (
	"bytes"
	"errors"
	"testing"
)

// A policy without statistics is written as before they existed, so the
// hashes of existing policies stay valid; one with them writes its rule
// and reads back the same.
func TestStatisticsCanonical(t *testing.T) {
	p := Default()
	doc, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(doc, []byte("statistics")) {
		t.Errorf("a policy without statistics writes them: %s", doc)
	}
	if p.Statistics.Enabled() {
		t.Error("statistics on by default")
	}
	p.Statistics = NewStatistics(500)
	doc, err = p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte(`"statistics":{"mechanism":"discrete_laplace","epsilon_milli":500}`)) {
		t.Errorf("canonical form %s lacks the statistics rule", doc)
	}
	q, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if q.Statistics != p.Statistics || q.Statistics.Epsilon() != 0.5 {
		t.Errorf("read back %+v, want %+v", q.Statistics, p.Statistics)
	}
}

// Every broken statistics rule is refused with its reason.
func TestStatisticsRefused(t *testing.T) {
	for name, s := range map[string]Statistics{
		"unknown mechanism":    {Mechanism: "laplace", EpsilonMilli: 500},
		"no mechanism":         {EpsilonMilli: 500},
		"ε 0":                  {Mechanism: MechanismDiscreteLaplace},
		"ε negative":           {Mechanism: MechanismDiscreteLaplace, EpsilonMilli: -1},
		"ε above the bound":    {Mechanism: MechanismDiscreteLaplace, EpsilonMilli: MaxEpsilonMilli + 1},
		"ε far above anything": {Mechanism: MechanismDiscreteLaplace, EpsilonMilli: 1 << 40},
	} {
		p := Default()
		p.Statistics = s
		if err := p.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v, want ErrInvalid", name, err)
		}
	}
	for _, doc := range []string{
		`"statistics":{"mechanism":"discrete_laplace","epsilon_milli":0.5}`,
		`"statistics":{"mechanism":"discrete_laplace","epsilon_milli":500,"delta":1}`,
	} {
		d, _ := Default().Canonical()
		d = append(d[:len(d)-1], []byte(","+doc+"}")...)
		if _, err := Parse(d); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Parse = %v, want ErrInvalid", doc, err)
		}
	}
}

// ParseEpsilon reads decimals exactly into thousandths and refuses what
// they cannot hold.
func TestParseEpsilon(t *testing.T) {
	for s, want := range map[string]int{"0.5": 500, "1": 1000, "0.125": 125, "0.001": 1, "10": 10_000, "2.25": 2250, "0.10": 100} {
		if got, err := ParseEpsilon(s); err != nil || got != want {
			t.Errorf("ParseEpsilon(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "0.0001", "10.001", "-1", "+1", "1.", ".5", "1e-1", "0.5x", "NaN", "99999999999999999999"} {
		if got, err := ParseEpsilon(s); err == nil {
			t.Errorf("ParseEpsilon(%q) = %d, want an error", s, got)
		}
	}
}
