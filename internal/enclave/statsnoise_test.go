package enclave

// The noise of public statistics against its distribution. The draws
// come from a seeded ChaCha8 stream, so every run sees the same samples:
// the tests are exact and cannot flake, and each threshold is one a
// correct sampler passes by a wide margin (chi-squared at p = 1e-4, five
// standard errors) while the wrong-scale sampler of TestChiSquaredHasPower
// fails it.

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// seeded returns a deterministic source of random integers.
func seeded(seed byte) *randomInts {
	var s [32]byte
	s[0] = seed
	return &randomInts{r: rand.NewChaCha8(s)}
}

// laplacePMF returns P(Z = z) of the discrete Laplace of parameter s/t.
func laplacePMF(s, t uint64, z int64) float64 {
	p := math.Exp(-float64(s) / float64(t))
	return (1 - p) / (1 + p) * math.Pow(p, math.Abs(float64(z)))
}

// draws returns n draws of the discrete Laplace of parameter s/t.
func draws(t *testing.T, g *randomInts, n int, s, tt uint64) []int64 {
	t.Helper()
	out := make([]int64, n)
	for i := range out {
		z, err := g.discreteLaplace(s, tt)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = z
	}
	return out
}

// chiSquared returns the chi-squared statistic of zs against the discrete
// Laplace of parameter s/t, over the values whose expected count is at
// least 5 and the two tails beyond them, and its degrees of freedom.
func chiSquared(zs []int64, s, t uint64) (stat float64, df int) {
	n := float64(len(zs))
	k := int64(0)
	for n*laplacePMF(s, t, k+1) >= 5 {
		k++
	}
	observed := map[int64]float64{}
	for _, z := range zs {
		observed[max(min(z, k+1), -k-1)]++ // ±(k+1) collect the tails
	}
	tail := 0.0 // P(Z > k), = P(Z < -k)
	for z := -k; z <= k; z++ {
		e := n * laplacePMF(s, t, z)
		stat += (observed[z] - e) * (observed[z] - e) / e
		if z >= 0 {
			tail += laplacePMF(s, t, z)
		}
	}
	tail = (1 - (2*tail - laplacePMF(s, t, 0))) / 2
	for _, z := range []int64{-k - 1, k + 1} {
		e := n * tail
		stat += (observed[z] - e) * (observed[z] - e) / e
	}
	return stat, int(2*k + 2)
}

// chiSquaredCritical returns the chi-squared value that df degrees of
// freedom exceed with probability 1e-4 (Wilson-Hilferty).
func chiSquaredCritical(df int) float64 {
	const z = 3.719 // the standard normal's 1 - 1e-4 quantile
	d := float64(df)
	c := 1 - 2/(9*d) + z*math.Sqrt(2/(9*d))
	return d * c * c * c
}

// TestDiscreteLaplaceDistribution draws the noise of the parameters the
// policy gives (ε 0.1, 0.5 and 1 for sensitivity 1; ε 0.5 for the GAEN
// count's 30) and checks its mean, its variance and its whole pmf.
func TestDiscreteLaplaceDistribution(t *testing.T) {
	const n = 100_000
	for i, c := range []struct{ epsilonMilli, delta int }{{100, 1}, {500, 1}, {1000, 1}, {500, 30}} {
		s, tt := noiseParams(c.epsilonMilli, c.delta)
		zs := draws(t, seeded(byte(i)), n, s, tt)
		variance := noiseVariance(c.epsilonMilli, c.delta)
		mean, m2 := 0.0, 0.0
		for _, z := range zs {
			mean += float64(z)
		}
		mean /= n
		for _, z := range zs {
			m2 += (float64(z) - mean) * (float64(z) - mean)
		}
		m2 /= n - 1
		if se := math.Sqrt(variance / n); math.Abs(mean) > 5*se {
			t.Errorf("ε=%d‰ Δ=%d: mean %.3f, want 0 within %.3f", c.epsilonMilli, c.delta, mean, 5*se)
		}
		// A discrete Laplace's fourth moment is about 6σ⁴, so the sample
		// variance's standard error is about σ²·sqrt(5/n).
		if se := variance * math.Sqrt(5.0/n); math.Abs(m2-variance) > 5*se {
			t.Errorf("ε=%d‰ Δ=%d: variance %.2f, want %.2f within %.2f", c.epsilonMilli, c.delta, m2, variance, 5*se)
		}
		stat, df := chiSquared(zs, s, tt)
		t.Logf("ε=%d‰ Δ=%d: mean %.3f, variance %.2f (want %.2f), chi-squared %.1f over %d degrees of freedom", c.epsilonMilli, c.delta, mean, m2, variance, stat, df)
		if stat > chiSquaredCritical(df) {
			t.Errorf("ε=%d‰ Δ=%d: chi-squared %.1f over %d degrees of freedom, above %.1f (p < 1e-4)", c.epsilonMilli, c.delta, stat, df, chiSquaredCritical(df))
		}
	}
}

// TestChiSquaredHasPower: the same test refuses noise of a scale 20%
// off, and noise whose zero is drawn twice as often (the bug the
// sampler's rejection of "-0" prevents), so passing it means something.
func TestChiSquaredHasPower(t *testing.T) {
	const n = 100_000
	s, tt := noiseParams(500, 1)
	wrong := draws(t, seeded(7), n, s*12, tt*10)
	if stat, df := chiSquared(wrong, s, tt); stat <= chiSquaredCritical(df) {
		t.Errorf("noise of scale 1/1.2 passed as the policy's: chi-squared %.1f over %d degrees of freedom", stat, df)
	}
	g := seeded(8)
	asym := make([]int64, n)
	for i := range asym {
		z, err := g.discreteLaplace(s, tt)
		if err != nil {
			t.Fatal(err)
		}
		if z == 0 || i%2 == 0 {
			asym[i] = z
			continue
		}
		asym[i] = -abs(z) // signs no longer symmetric
	}
	if stat, df := chiSquared(asym, s, tt); stat <= chiSquaredCritical(df) {
		t.Errorf("asymmetric noise passed: chi-squared %.1f over %d degrees of freedom", stat, df)
	}
}

func abs(z int64) int64 {
	if z < 0 {
		return -z
	}
	return z
}

// TestBernoulliExp checks the exact exp(-γ) coin, below and above γ = 1,
// against its probability.
func TestBernoulliExp(t *testing.T) {
	const n = 200_000
	g := seeded(3)
	for _, c := range []struct{ num, den uint64 }{{0, 1}, {1, 3}, {1, 1}, {5, 2}} {
		hits := 0
		for range n {
			ok, err := g.bernoulliExp(c.num, c.den)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				hits++
			}
		}
		p := math.Exp(-float64(c.num) / float64(c.den))
		se := math.Sqrt(p * (1 - p) / n)
		if got := float64(hits) / n; math.Abs(got-p) > 5*se+1e-12 {
			t.Errorf("Bernoulli(exp(-%d/%d)): frequency %.4f, want %.4f", c.num, c.den, got, p)
		}
	}
}

// TestBelowIsUniform: a modulus that does not divide 2^64 still gives
// every residue alike, by the rejection of the low values.
func TestBelowIsUniform(t *testing.T) {
	const n, m = 300_000, 6
	g := seeded(4)
	var counts [m]int
	for range n {
		v, err := g.below(m)
		if err != nil {
			t.Fatal(err)
		}
		counts[v]++
	}
	stat := 0.0
	for _, c := range counts {
		e := float64(n) / m
		stat += (float64(c) - e) * (float64(c) - e) / e
	}
	if stat > chiSquaredCritical(m-1) {
		t.Errorf("below(%d): counts %v, chi-squared %.1f", m, counts, stat)
	}
}

// TestRandomnessFailure: a source that fails makes the draw fail rather
// than return a value.
func TestRandomnessFailure(t *testing.T) {
	g := &randomInts{r: failingReader{}}
	if _, err := g.discreteLaplace(1, 1000); err == nil {
		t.Error("a draw from a failing source succeeded")
	}
}

type failingReader struct{}

var errTestRandomness = errors.New("test: no randomness")

func (failingReader) Read([]byte) (int, error) { return 0, errTestRandomness }
