package transparency

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/mail"
	"net/url"
	"strconv"
	"strings"

	"github.com/conftrace/conftrace/policy"
)

// policyView is the attested policy as the page puts it in words.
type policyView struct {
	policy.Policy
	// Authorities, GAENKeys and Governance name keys with their
	// fingerprints.
	Authorities, GAENKeys, Governance []namedKey
	Buckets                           []bucket
	// Orders are the thresholds of orders 1 to max_order.
	Orders []order
	// UploadAuthorization and FlushEvery spell durations.
	UploadAuthorization, FlushEvery string
	// ContactURL links the operator contact, when it is an https URL or
	// an e-mail address; empty otherwise.
	ContactURL template.URL
	// StatisticsMechanism and StatisticsEpsilon spell the statistics
	// rule, when the policy releases statistics.
	StatisticsMechanism, StatisticsEpsilon string
}

// namedKey is a key the policy names: its name and a hex fingerprint.
type namedKey struct {
	Name, Fingerprint string
}

// bucket is one attenuation bucket of the risk rule.
type bucket struct {
	Range         string
	WeightPercent int
}

// order is the threshold of one order of exposure.
type order struct {
	Order, MinimumWeightedMinutes int
}

func newPolicyView(p policy.Policy) *policyView {
	v := &policyView{Policy: p}
	for _, a := range p.Authorities {
		v.Authorities = append(v.Authorities, namedKey{a.Name, hex.EncodeToString(a.PublicKey)})
	}
	for _, k := range p.GAENExportKeys {
		// An export key is a DER SubjectPublicKeyInfo: its SHA-256 is
		// what key servers publish and tools print.
		sum := sha256.Sum256(k.PublicKey)
		v.GAENKeys = append(v.GAENKeys, namedKey{k.Name, hex.EncodeToString(sum[:])})
	}
	for _, m := range p.Governance {
		v.Governance = append(v.Governance, namedKey{m.Name, hex.EncodeToString(m.PublicKey)})
	}
	v.Buckets = buckets(p.Risk)
	for k := 1; k <= p.MaxOrder(); k++ {
		v.Orders = append(v.Orders, order{k, p.OrderRisk(k).MinimumWeightedMinutes})
	}
	v.UploadAuthorization = seconds(p.UploadAuthorizationSeconds)
	v.FlushEvery = seconds(p.StoreFlushSeconds)
	v.ContactURL = contactURL(p.OperatorContact)
	if p.Statistics.Enabled() {
		v.StatisticsMechanism = p.Statistics.Mechanism
		if v.StatisticsMechanism == policy.MechanismDiscreteLaplace {
			v.StatisticsMechanism = "discrete Laplace"
		}
		v.StatisticsEpsilon = strconv.FormatFloat(p.Statistics.Epsilon(), 'f', -1, 64)
	}
	return v
}

// buckets spells the risk rule's attenuation buckets with their weights.
func buckets(r policy.Risk) []bucket {
	var out []bucket
	for i, w := range r.WeightsPercent {
		var rng string
		switch {
		case i == len(r.AttenuationThresholds):
			rng = fmt.Sprintf("above %d dB", r.AttenuationThresholds[i-1])
		case i == 0:
			rng = fmt.Sprintf("up to %d dB", r.AttenuationThresholds[0])
		default:
			rng = fmt.Sprintf("%d to %d dB", r.AttenuationThresholds[i-1]+1, r.AttenuationThresholds[i])
		}
		out = append(out, bucket{rng, w})
	}
	return out
}

// seconds spells a duration in the largest unit that divides it.
func seconds(s int) string {
	unit := func(n int, name string) string {
		if n == 1 {
			return "1 " + name
		}
		return fmt.Sprintf("%d %ss", n, name)
	}
	switch {
	case s >= 86400 && s%86400 == 0:
		return unit(s/86400, "day")
	case s >= 3600 && s%3600 == 0:
		return unit(s/3600, "hour")
	case s >= 60 && s%60 == 0:
		return unit(s/60, "minute")
	}
	return unit(s, "second")
}

// contactURL links an operator contact that is an https URL or a bare
// e-mail address; anything else stays text.
func contactURL(c string) template.URL {
	if u, err := url.Parse(c); err == nil && u.Scheme == "https" && u.Host != "" && u.User == nil {
		return template.URL(u.String())
	}
	if a, err := mail.ParseAddress(c); err == nil && a.Name == "" && a.Address == c && !strings.ContainsAny(c, "?&#") {
		return template.URL("mailto:" + c)
	}
	return ""
}
