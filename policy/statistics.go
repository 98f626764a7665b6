package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// Public statistics (docs/statistics.md). The backend counts, in enclave
// memory, what it served each UTC day, and publishes each closed day's
// counts only with noise drawn by a differentially private mechanism. The
// policy says which mechanism and with what ε, so that every client that
// verified the attestation knows the privacy budget the counts spend.

// MechanismDiscreteLaplace is the discrete Laplace (two-sided geometric)
// mechanism: a count c is released as c + Z, where P(Z = z) is
// proportional to exp(-ε·|z|/Δ) for a count of sensitivity Δ.
const MechanismDiscreteLaplace = "discrete_laplace"

// MaxEpsilonMilli bounds Statistics.EpsilonMilli: above ε = 10 a count's
// noise is almost always 0 and the release protects nothing worth the
// name.
const MaxEpsilonMilli = 10_000

// Statistics is the policy's rule for public statistics. Its zero value,
// which a policy writes by leaving the field out, turns them off: nothing
// is counted or released. Off is the default because every release spends
// privacy budget, which an auditor should see chosen in the policy rather
// than implied by its absence; and it keeps the canonical bytes, and so
// the hashes, of every policy written before statistics existed.
type Statistics struct {
	// Mechanism is the noise mechanism; MechanismDiscreteLaplace is the
	// only one.
	Mechanism string `json:"mechanism"`
	// EpsilonMilli is ε, per count and per UTC day, in thousandths (500
	// is ε = 0.5): in integers, so that the policy has one canonical form.
	EpsilonMilli int `json:"epsilon_milli"`
}

// Enabled reports whether the policy releases statistics.
func (s Statistics) Enabled() bool { return s != Statistics{} }

// Epsilon returns ε per count per day.
func (s Statistics) Epsilon() float64 { return float64(s.EpsilonMilli) / 1000 }

// NewStatistics returns the statistics rule with the discrete Laplace
// mechanism and epsilonMilli thousandths of ε.
func NewStatistics(epsilonMilli int) Statistics {
	return Statistics{Mechanism: MechanismDiscreteLaplace, EpsilonMilli: epsilonMilli}
}

// validate checks the statistics rule: absent, or a known mechanism with
// ε in 0.001..10.
func (s Statistics) validate() error {
	if !s.Enabled() {
		return nil
	}
	if s.Mechanism != MechanismDiscreteLaplace {
		return invalidf("statistics: mechanism %q: want %q (leave statistics out to release none)", s.Mechanism, MechanismDiscreteLaplace)
	}
	if s.EpsilonMilli < 1 || s.EpsilonMilli > MaxEpsilonMilli {
		return invalidf("statistics: epsilon_milli %d outside 1..%d (ε 0.001 to 10)", s.EpsilonMilli, MaxEpsilonMilli)
	}
	return nil
}

// ParseEpsilon reads ε written as a decimal number of at most three
// decimals ("0.5", "1", "0.125") into thousandths, exactly: a value that
// thousandths cannot hold is refused rather than rounded, since ε is a
// promise to the public.
func ParseEpsilon(s string) (int, error) {
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" || (dot && frac == "") || len(frac) > 3 || strings.ContainsAny(whole+frac, "+-") {
		return 0, fmt.Errorf("ε %q: want a decimal number with at most three decimals, such as 0.5", s)
	}
	w, err := strconv.ParseUint(whole, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("ε %q: want a decimal number with at most three decimals, such as 0.5", s)
	}
	f := uint64(0)
	if frac != "" {
		if f, err = strconv.ParseUint(frac+strings.Repeat("0", 3-len(frac)), 10, 32); err != nil {
			return 0, fmt.Errorf("ε %q: want a decimal number with at most three decimals, such as 0.5", s)
		}
	}
	m := w*1000 + f
	if m < 1 || m > MaxEpsilonMilli {
		return 0, fmt.Errorf("ε %q outside 0.001..%d", s, MaxEpsilonMilli/1000)
	}
	return int(m), nil
}
