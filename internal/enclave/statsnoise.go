package enclave

// The noise of public statistics: the discrete Laplace distribution
// (two-sided geometric), P(Z = z) = (1-p)/(1+p) · p^|z| with p =
// exp(-s/t), drawn exactly, in integers, by the algorithms of Canonne,
// Kamath and Steinke ("The Discrete Gaussian for Differential Privacy",
// 2020, algorithms 1 and 2). Exact matters: a sampler that goes through
// floating point (a logarithm of a uniform double) has gaps and biases in
// its tails through which a count can show (Mironov, "On Significance of
// the Least Significant Bits for Differential Privacy", 2012). Here every
// step is a comparison of uniform integers, so the distribution is the one
// the analysis assumes, whatever the parameters.
//
// The policy's ε is in thousandths (policy.Statistics.EpsilonMilli = m),
// so the noise of a count of sensitivity Δ, of scale Δ/ε, has s = m and
// t = 1000·Δ: a rational parameter, as the algorithm needs.

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// randomInts draws uniform integers from a source of random bytes:
// crypto/rand in the enclave, a seeded generator in the tests.
type randomInts struct {
	r   io.Reader
	buf [8]byte
}

// below returns a uniform integer in [0, n), n > 0, by rejection, so that
// no value is likelier than another.
func (g *randomInts) below(n uint64) (uint64, error) {
	// 2^64 mod n values at the bottom would make some residues likelier.
	skip := (math.MaxUint64%n + 1) % n
	for {
		if _, err := io.ReadFull(g.r, g.buf[:]); err != nil {
			return 0, fmt.Errorf("enclave: reading randomness: %w", err)
		}
		if v := binary.LittleEndian.Uint64(g.buf[:]); v >= skip {
			return v % n, nil
		}
	}
}

// bernoulli returns true with probability num/den (0 <= num <= den,
// den > 0).
func (g *randomInts) bernoulli(num, den uint64) (bool, error) {
	v, err := g.below(den)
	return v < num, err
}

// bernoulliExp returns true with probability exp(-num/den), num >= 0,
// den > 0 (algorithm 1 of Canonne, Kamath and Steinke, and its extension
// to num/den above 1 as a product of exp(-1) draws).
func (g *randomInts) bernoulliExp(num, den uint64) (bool, error) {
	for num > den {
		ok, err := g.bernoulliExp01(1, 1)
		if err != nil || !ok {
			return false, err
		}
		num -= den
	}
	return g.bernoulliExp01(num, den)
}

// bernoulliExp01 returns true with probability exp(-γ), γ = num/den in
// [0, 1]: it draws A_k ~ Bernoulli(γ/k) for k = 1, 2... until one is 0, and
// answers whether that k is odd.
func (g *randomInts) bernoulliExp01(num, den uint64) (bool, error) {
	k := uint64(1)
	for {
		// den·k cannot overflow: den is at most 1000·Δ and k passes 20
		// with probability below 1/20!.
		a, err := g.bernoulli(num, den*k)
		if err != nil {
			return false, err
		}
		if !a {
			return k%2 == 1, nil
		}
		k++
	}
}

// discreteLaplace returns Z with P(Z = z) proportional to exp(-|z|·s/t),
// s, t >= 1 (algorithm 2 of Canonne, Kamath and Steinke).
func (g *randomInts) discreteLaplace(s, t uint64) (int64, error) {
	for {
		u, err := g.below(t)
		if err != nil {
			return 0, err
		}
		d, err := g.bernoulliExp(u, t)
		if err != nil {
			return 0, err
		}
		if !d {
			continue
		}
		// v ~ Geometric(1 - exp(-1)) on 0, 1, 2...
		v := uint64(0)
		for {
			a, err := g.bernoulliExp(1, 1)
			if err != nil {
				return 0, err
			}
			if !a {
				break
			}
			v++
		}
		y := (u + t*v) / s
		neg, err := g.bernoulli(1, 2)
		if err != nil {
			return 0, err
		}
		switch {
		case neg && y == 0:
			continue // else 0 would be drawn twice as often as it should
		case neg:
			return -int64(y), nil
		default:
			return int64(y), nil
		}
	}
}

// noiseParams returns the (s, t) of the discrete Laplace noise of a count
// of sensitivity delta under ε = epsilonMilli/1000: scale Δ/ε.
func noiseParams(epsilonMilli, delta int) (s, t uint64) {
	return uint64(epsilonMilli), 1000 * uint64(delta)
}

// noiseVariance returns the variance of that noise: 2p/(1-p)², p =
// exp(-ε/Δ).
func noiseVariance(epsilonMilli, delta int) float64 {
	p := math.Exp(-float64(epsilonMilli) / 1000 / float64(delta))
	return 2 * p / ((1 - p) * (1 - p))
}
