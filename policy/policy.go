// Package policy is the rule book a conftrace backend enforces: which health
// authorities may declare a test positive, which GAEN key servers' exports
// it imports, how long data is kept, how long its attestation (and so its
// Oblivious HTTP keys) lives, how uploads match and exposures are scored, and how large
// requests may be.
//
// The backend publishes its policy in canonical form inside the attestation
// bundle, and the evidence binds a hash of those exact bytes, so a client
// that verified the bundle knows the policy the attested code enforces: an
// operator cannot quietly add an authority or lengthen retention without the
// change showing up in what every client verifies.
//
// A policy is a JSON document. [Parse] reads one strictly (unknown fields,
// out-of-range values and duplicate authorities are refused) and
// [Policy.Canonical] writes the one canonical form that is hashed: compact
// JSON with fields in a fixed order and integers only.
//
//	p := policy.Default()
//	p.Authorities = append(p.Authorities, policy.Authority{Name: "lab-1", PublicKey: pub})
//	doc, err := p.Canonical()
package policy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/conftrace/conftrace/gps"
)

// Version is the policy format this package reads and writes.
const Version = 1

// Policy is the backend's rule book.
type Policy struct {
	// Version is the format version; always [Version].
	Version int `json:"version"`
	// Authorities may submit test results and GPS traces.
	Authorities []Authority `json:"authorities"`
	// RetentionDays is how many days of uploads are kept; older data keys
	// are destroyed, which makes their records unreadable.
	RetentionDays int `json:"retention_days"`
	// UploadAuthorizationSeconds is how long a positive result's upload
	// authorization stays valid.
	UploadAuthorizationSeconds int `json:"upload_authorization_seconds"`
	// BundleHours bounds how long an attestation bundle is valid: clients
	// refuse one valid for longer, and one past its end. The backend
	// attests new Oblivious HTTP keys every BundleHours/2 and accepts the
	// previous ones until their bundle's end, so a client's verified key
	// works for at least BundleHours/2; restarts keep the keys, so the
	// operator cannot make every phone re-fetch the bundle at will.
	BundleHours int `json:"bundle_hours"`
	// Matching lists the rules by which this system's own uploads match
	// (MatchReciprocal, MatchOneSided). Keys imported from GAEN exports
	// can only match one-sided.
	Matching []string `json:"matching"`
	// GAENExportKeys verify the GAEN key exports the backend imports; with
	// none, it imports nothing.
	GAENExportKeys []ExportKey `json:"gaen_export_keys"`
	// Answers says how precise exposure and GPS answers are: AnswersCoarse
	// (the default) or AnswersDetailed.
	Answers string `json:"answers"`
	// StoreFlushSeconds and StoreFlushRows set the clock on which what
	// phones cause to be stored (uploads) is written: every
	// StoreFlushSeconds, a flush of StoreFlushRows rows of StoreRowBytes,
	// real or filler, when what waits fits in them.
	StoreFlushSeconds int `json:"store_flush_seconds"`
	StoreFlushRows    int `json:"store_flush_rows"`
	// StoreFlushMaxRows, if not 0, lets a flush grow when more waits: to
	// StoreFlushRows times the largest power of two that what waits
	// fills, up to StoreFlushMaxRows (itself StoreFlushRows times a power
	// of two), the rest waiting for the next flush; StoreFlushHold says
	// for how many flushes, the one that needed it included, a size is
	// kept before it steps down. The host then learns per flush, in these
	// powers of two, how much was uploaded lately, in aggregate, and
	// nothing of less than twice StoreFlushRows. Without it every flush
	// has StoreFlushRows rows (and StoreFlushHold is 0), which bounds how
	// fast uploads become durable.
	StoreFlushMaxRows int `json:"store_flush_max_rows,omitzero"`
	StoreFlushHold    int `json:"store_flush_hold,omitzero"`
	// AnswerReleaseMillis releases every answer of the gateway at the next
	// multiple of this many milliseconds after its request arrived, so that
	// how long the backend worked on a request (an upload takes longer
	// than a check) does not show in when its answer leaves. 0 releases
	// answers at once.
	AnswerReleaseMillis int `json:"answer_release_ms"`
	// Risk scores matched sightings.
	Risk Risk `json:"risk"`
	// Limits bound what one request may carry.
	Limits Limits `json:"limits"`
	// GPS holds the thresholds of GPS trace matching.
	GPS GPS `json:"gps"`
	// TCB says which platform TCBs clients accept besides up-to-date SGX
	// ones (see [TCB]); a policy without it is written without it.
	TCB TCB `json:"tcb,omitzero"`
	// Governance, if not empty, is the governance set whose release
	// statements (package release) admit this backend's successors: a
	// replica hands its storage key to a build of another measurement or
	// policy only if every member signed a statement admitting it, with a
	// sequence number not below its own (docs/key-release.md). Without
	// it, the key goes only to the same build with the same policy. A
	// policy without it is written without it.
	Governance []GovernanceMember `json:"governance,omitempty"`
	// Orders sets n-order notifications (order.go): how far exposed phones
	// may warn their own contacts, and each order's threshold. A policy
	// without it notifies first-order contacts only and is written
	// without it.
	Orders Orders `json:"orders,omitzero"`
	// Statistics sets the public statistics (statistics.go): the noise
	// mechanism and ε of each day's released counts. A policy without it
	// releases none and is written without it.
	Statistics Statistics `json:"statistics,omitzero"`
	// OperatorContact, if not empty, is how the public reaches whoever
	// runs the backend (contact.go); shown on the transparency page. A
	// policy without it is written without it.
	OperatorContact string `json:"operator_contact,omitempty"`
	// Certificates sets exposure certificates (certificates.go): how long
	// they are valid and whether verifiers accept each once. A policy
	// without it is written without it.
	Certificates Certificates `json:"certificates,omitzero"`
}

// GPS holds the thresholds of GPS trace matching (see package gps for the
// exact rule and why the defaults are what they are), in integers so that
// the policy has one canonical form.
type GPS struct {
	// DistanceMeters is the largest great-circle distance at which two
	// fixes count as together.
	DistanceMeters int `json:"distance_meters"`
	// TimeToleranceSeconds is the largest time difference at which two
	// fixes count as simultaneous.
	TimeToleranceSeconds int `json:"time_tolerance_seconds"`
	// MinimumMinutes is how many minutes of episodes within 24 hours make
	// an exposure.
	MinimumMinutes int `json:"minimum_minutes"`
	// MaxGapSeconds is the longest gap between matched fixes inside one
	// episode.
	MaxGapSeconds int `json:"max_gap_seconds"`
	// MaxTracePoints bounds a trace, a patient's or a device's.
	MaxTracePoints int `json:"max_trace_points"`
}

// MaxTracePointsPerRequest is the most points one trace can carry within
// the largest padded message, at the worst case of the binary trace form.
const MaxTracePointsPerRequest = 60_000

// Params returns the thresholds as package gps takes them.
func (g GPS) Params() gps.Params {
	return gps.Params{
		DistanceMeters: float64(g.DistanceMeters),
		TimeTolerance:  time.Duration(g.TimeToleranceSeconds) * time.Second,
		MinMinutes:     float64(g.MinimumMinutes),
		MaxGap:         time.Duration(g.MaxGapSeconds) * time.Second,
	}
}

// The matching rules a policy can list.
const (
	// MatchReciprocal matches an upload's sighting with a checking
	// device's sighting of the same encounter from the other side: both
	// devices heard each other, and both proved their identifiers with
	// their daily keys. It is the paper's rule and the default.
	MatchReciprocal = "reciprocal"
	// MatchOneSided matches a checking device's sighting of an identifier
	// that derives from an uploaded daily key, as GAEN phones match
	// downloaded keys: hearing an infected device is enough, so a
	// Bluetooth sniffer that heard someone learns whether they uploaded.
	MatchOneSided = "one_sided"
)

// How precise answers are.
const (
	// AnswersCoarse answers only whether a phone was exposed, on which day
	// most recently, and by which rules: nothing about matches below the
	// threshold, so that repeated checks with crafted reports cannot map
	// who uploaded what, when and how close.
	AnswersCoarse = "coarse"
	// AnswersDetailed also gives, for every day of the window, the matched
	// minutes, weighted minutes and closest attenuation, and GPS episodes
	// with their times and distances.
	AnswersDetailed = "detailed"
)

// StoreRowBytes is the size of every row the flushes write.
const StoreRowBytes = 4096

// Detailed reports whether answers carry per-day figures and episodes.
func (p Policy) Detailed() bool { return p.Answers == AnswersDetailed }

// ExportKey is a GAEN key server's export signing key. Exports that it
// signed are imported for one-sided matching.
type ExportKey struct {
	// Name identifies the key server in logs and answers.
	Name string `json:"name"`
	// PublicKey is the ECDSA P-256 verification key, as a DER
	// SubjectPublicKeyInfo.
	PublicKey []byte `json:"public_key"`
}

// ECDSA returns the verification key.
func (k ExportKey) ECDSA() (*ecdsa.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(k.PublicKey)
	if err != nil {
		return nil, invalidf("GAEN export key %q: %v", k.Name, err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, invalidf("GAEN export key %q: want an ECDSA P-256 key, got %T", k.Name, pub)
	}
	return ec, nil
}

// Reciprocal reports whether uploads match by the reciprocal rule.
func (p Policy) Reciprocal() bool { return slices.Contains(p.Matching, MatchReciprocal) }

// OneSided reports whether uploads also match by the one-sided rule.
func (p Policy) OneSided() bool { return slices.Contains(p.Matching, MatchOneSided) }

// Authority is a health authority allowed to declare tests positive.
type Authority struct {
	// Name identifies the authority in results and logs.
	Name string `json:"name"`
	// PublicKey verifies the authority's signatures.
	PublicKey ed25519.PublicKey `json:"public_key"`
}

// Risk holds the parameters of the exposure risk score, in the spirit of
// the Exposure Notification "exposure windows" scoring: each matched
// encounter contributes its minutes weighted by the attenuation bucket it
// falls in, and a day counts as exposed when the weighted minutes reach
// MinimumWeightedMinutes.
type Risk struct {
	// AttenuationThresholds are the upper bounds (dB, inclusive) of the
	// attenuation buckets, ascending: with [55, 63, 73] the buckets are
	// <=55 ("immediate"), <=63 ("near"), <=73 ("medium") and above ("other").
	AttenuationThresholds []int `json:"attenuation_thresholds_db"`
	// WeightsPercent weighs each bucket's minutes; one more entry than
	// AttenuationThresholds.
	WeightsPercent []int `json:"weights_percent"`
	// MinimumWeightedMinutes is the weighted minutes per day from which a
	// day counts as an exposure.
	MinimumWeightedMinutes int `json:"minimum_weighted_minutes"`
	// IntervalTolerance is how many 10-minute intervals the two sides'
	// records of one encounter may differ by (clock skew).
	IntervalTolerance int `json:"interval_tolerance"`
}

// Limits bound requests.
type Limits struct {
	// MaxUploadSightings is the most sightings one upload may carry.
	MaxUploadSightings int `json:"max_upload_sightings"`
	// MaxCheckSightings is the most sightings one exposure check may carry.
	MaxCheckSightings int `json:"max_check_sightings"`
	// MaxSightingMinutes is the longest duration one sighting may claim.
	MaxSightingMinutes int `json:"max_sighting_minutes"`
	// ChecksPerKeyDay is how many exchanges one daily key may take part
	// in per UTC day, counted in enclave memory only.
	ChecksPerKeyDay int `json:"checks_per_key_day"`
}

// MaxKeys is the most daily keys one upload or exposure check may carry:
// one a day of the window, and as many again for devices that rotate their
// key more than once a day.
func (p Policy) MaxKeys() int { return 2*p.RetentionDays + 2 }

// Default returns a policy with sensible defaults and no authorities.
//
// The risk defaults follow the attenuation buckets common in Exposure
// Notification deployments (55/63/73 dB) and the "15 minutes, close
// contact" definition used by public-health agencies. The limits allow a
// heavily social user's 14 days: 1,000 sightings a day (seven devices in
// every 10-minute interval, all day) is far above what deployments
// observed, and 16,000 sightings are 176,000 bytes, well within the
// largest padded message (1 MiB). Uploads match reciprocally only. A
// bundle lives a day: evidence from a platform that a TCB recovery has
// since fixed stops working within a day, and a phone that exchanges once
// a day fetches and verifies a bundle once a day.
func Default() Policy {
	return Policy{
		Version:                    Version,
		Authorities:                []Authority{},
		Matching:                   []string{MatchReciprocal},
		Answers:                    AnswersCoarse,
		StoreFlushSeconds:          3600,
		StoreFlushRows:             32,
		StoreFlushMaxRows:          32 << 6,
		StoreFlushHold:             4,
		AnswerReleaseMillis:        100,
		GAENExportKeys:             []ExportKey{},
		RetentionDays:              14,
		UploadAuthorizationSeconds: 24 * 60 * 60,
		BundleHours:                24,
		Risk: Risk{
			AttenuationThresholds:  []int{55, 63, 73},
			WeightsPercent:         []int{100, 100, 50, 0},
			MinimumWeightedMinutes: 15,
			IntervalTolerance:      1,
		},
		Limits: Limits{
			MaxUploadSightings: 16_000,
			MaxCheckSightings:  16_000,
			MaxSightingMinutes: 10,
			ChecksPerKeyDay:    48,
		},
		GPS: defaultGPS(),
	}
}

// defaultGPS mirrors gps.DefaultParams: 10 m, 5 minutes, 15 minutes in 24
// hours, 10-minute gaps; traces of up to 50,000 fixes (14 days at one fix
// every 25 seconds).
func defaultGPS() GPS {
	d := gps.DefaultParams()
	return GPS{
		DistanceMeters:       int(d.DistanceMeters),
		TimeToleranceSeconds: int(d.TimeTolerance / time.Second),
		MinimumMinutes:       int(d.MinMinutes),
		MaxGapSeconds:        int(d.MaxGap / time.Second),
		MaxTracePoints:       50_000,
	}
}

// BundleLifetime returns BundleHours as a duration: the longest an
// attestation bundle may be valid.
func (p Policy) BundleLifetime() time.Duration {
	return time.Duration(p.BundleHours) * time.Hour
}

// UploadAuthorizationTTL returns UploadAuthorizationSeconds as a duration.
func (p Policy) UploadAuthorizationTTL() time.Duration {
	return time.Duration(p.UploadAuthorizationSeconds) * time.Second
}

// Authority returns the authority with the given name.
func (p Policy) Authority(name string) (Authority, bool) {
	i := slices.IndexFunc(p.Authorities, func(a Authority) bool { return a.Name == name })
	if i < 0 {
		return Authority{}, false
	}
	return p.Authorities[i], true
}

// WindowStart returns the start of the retention window at now: midnight
// UTC of the oldest day still kept. The window counts whole UTC days,
// today included, so it can reach back less than RetentionDays*24 hours.
func (p Policy) WindowStart(now time.Time) time.Time {
	y, m, d := now.UTC().Date()
	return time.Date(y, m, d-(p.RetentionDays-1), 0, 0, 0, 0, time.UTC)
}

// CheckAuthorityName reports whether name can name an authority: 1 to 64
// bytes, no control characters and no surrounding spaces (names travel in
// PEM headers and logs).
func CheckAuthorityName(name string) error {
	if name == "" || len(name) > 64 {
		return invalidf("authority name %q: want 1 to 64 bytes", name)
	}
	if strings.TrimSpace(name) != name || strings.ContainsFunc(name, unicode.IsControl) {
		return invalidf("authority name %q: no control characters or surrounding spaces", name)
	}
	return nil
}

// ErrInvalid is wrapped by every error that reports an invalid policy.
var ErrInvalid = errors.New("policy: invalid")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Validate reports the first rule the policy breaks.
func (p Policy) Validate() error {
	if p.Version != Version {
		return invalidf("version %d, want %d", p.Version, Version)
	}
	seen := map[string]bool{}
	for i, a := range p.Authorities {
		if err := CheckAuthorityName(a.Name); err != nil {
			return fmt.Errorf("authority %d: %w", i, err)
		}
		if seen[a.Name] {
			return invalidf("authority %q listed twice", a.Name)
		}
		seen[a.Name] = true
		if len(a.PublicKey) != ed25519.PublicKeySize {
			return invalidf("authority %q: public key is %d bytes, want %d (Ed25519)", a.Name, len(a.PublicKey), ed25519.PublicKeySize)
		}
	}
	if err := p.validateMatching(); err != nil {
		return err
	}
	if err := p.TCB.Validate(); err != nil {
		return err
	}
	if err := p.validateGovernance(); err != nil {
		return err
	}
	if err := p.Orders.validate(); err != nil {
		return err
	}
	if err := p.Statistics.validate(); err != nil {
		return err
	}
	if err := checkOperatorContact(p.OperatorContact); err != nil {
		return err
	}
	if err := p.Certificates.validate(); err != nil {
		return err
	}
	if p.Answers != AnswersCoarse && p.Answers != AnswersDetailed {
		return invalidf("answers %q: want %q or %q", p.Answers, AnswersCoarse, AnswersDetailed)
	}
	if err := p.validateFlushes(); err != nil {
		return err
	}
	if p.AnswerReleaseMillis < 0 || p.AnswerReleaseMillis > 10_000 {
		return invalidf("answer_release_ms %d outside 0..10000", p.AnswerReleaseMillis)
	}
	if p.RetentionDays < 1 || p.RetentionDays > 60 {
		return invalidf("retention_days %d outside 1..60", p.RetentionDays)
	}
	if p.UploadAuthorizationSeconds < 60 || p.UploadAuthorizationSeconds > 14*24*3600 {
		return invalidf("upload_authorization_seconds %d outside 60..1209600", p.UploadAuthorizationSeconds)
	}
	if p.BundleHours < 6 || p.BundleHours > 168 {
		return invalidf("bundle_hours %d outside 6..168", p.BundleHours)
	}
	r := p.Risk
	if len(r.AttenuationThresholds) == 0 || len(r.AttenuationThresholds) > 8 {
		return invalidf("risk: %d attenuation thresholds, want 1 to 8", len(r.AttenuationThresholds))
	}
	for i, t := range r.AttenuationThresholds {
		if t < 0 || t > 255 || (i > 0 && t <= r.AttenuationThresholds[i-1]) {
			return invalidf("risk: attenuation thresholds must ascend within 0..255")
		}
	}
	if len(r.WeightsPercent) != len(r.AttenuationThresholds)+1 {
		return invalidf("risk: %d weights for %d thresholds, want one more weight than thresholds", len(r.WeightsPercent), len(r.AttenuationThresholds))
	}
	for _, w := range r.WeightsPercent {
		if w < 0 || w > 1000 {
			return invalidf("risk: weight %d%% outside 0..1000", w)
		}
	}
	if r.MinimumWeightedMinutes < 1 || r.MinimumWeightedMinutes > 24*60 {
		return invalidf("risk: minimum_weighted_minutes %d outside 1..1440", r.MinimumWeightedMinutes)
	}
	if r.IntervalTolerance < 0 || r.IntervalTolerance > 6 {
		return invalidf("risk: interval_tolerance %d outside 0..6", r.IntervalTolerance)
	}
	l := p.Limits
	// A request must fit in one padded message (see package bhttp).
	if l.MaxUploadSightings < 1 || l.MaxUploadSightings > MaxSightingsPerRequest {
		return invalidf("limits: max_upload_sightings %d outside 1..%d", l.MaxUploadSightings, MaxSightingsPerRequest)
	}
	if l.MaxCheckSightings < 1 || l.MaxCheckSightings > MaxSightingsPerRequest {
		return invalidf("limits: max_check_sightings %d outside 1..%d", l.MaxCheckSightings, MaxSightingsPerRequest)
	}
	if l.MaxSightingMinutes < 1 || l.MaxSightingMinutes > 60 {
		return invalidf("limits: max_sighting_minutes %d outside 1..60", l.MaxSightingMinutes)
	}
	if l.ChecksPerKeyDay < 1 || l.ChecksPerKeyDay > 65535 {
		return invalidf("limits: checks_per_key_day %d outside 1..65535", l.ChecksPerKeyDay)
	}
	if err := p.GPS.Params().Validate(); err != nil {
		return invalidf("gps: %v", err)
	}
	if p.GPS.MinimumMinutes < 1 {
		return invalidf("gps: minimum_minutes %d, want at least 1", p.GPS.MinimumMinutes)
	}
	if p.GPS.MaxTracePoints < 1 || p.GPS.MaxTracePoints > MaxTracePointsPerRequest {
		return invalidf("gps: max_trace_points %d outside 1..%d", p.GPS.MaxTracePoints, MaxTracePointsPerRequest)
	}
	return nil
}

// MaxStoreFlushRows bounds store_flush_rows and store_flush_max_rows: a
// flush is built in enclave memory (400 MB at this bound).
const MaxStoreFlushRows = 100_000

// validateFlushes checks the journal's flush schedule and shape.
func (p Policy) validateFlushes() error {
	if p.StoreFlushSeconds < 1 || p.StoreFlushSeconds > 86400 {
		return invalidf("store_flush_seconds %d outside 1..86400", p.StoreFlushSeconds)
	}
	if p.StoreFlushRows < 1 || p.StoreFlushRows > MaxStoreFlushRows {
		return invalidf("store_flush_rows %d outside 1..%d", p.StoreFlushRows, MaxStoreFlushRows)
	}
	if p.StoreFlushMaxRows == 0 {
		if p.StoreFlushHold != 0 {
			return invalidf("store_flush_hold %d without store_flush_max_rows: want 0 (flushes of one size)", p.StoreFlushHold)
		}
		return nil
	}
	m := p.StoreFlushRows
	for m < p.StoreFlushMaxRows && m <= MaxStoreFlushRows {
		m *= 2
	}
	// One spelling per shape: a fixed shape omits both fields.
	if m != p.StoreFlushMaxRows || m == p.StoreFlushRows || m > MaxStoreFlushRows {
		return invalidf("store_flush_max_rows %d: want 0, or store_flush_rows (%d) times 2, 4, 8... up to %d", p.StoreFlushMaxRows, p.StoreFlushRows, MaxStoreFlushRows)
	}
	if p.StoreFlushHold < 1 || p.StoreFlushHold > 100_000 {
		return invalidf("store_flush_hold %d outside 1..100000 (flushes)", p.StoreFlushHold)
	}
	return nil
}

// MaxSightingsPerRequest is the most sightings a policy may let one request
// carry: at 11 bytes a sighting (contactlog.ReportSightingSize), 440,000
// bytes, well within the largest padded message (1 MiB) with the daily keys
// and the framing.
const MaxSightingsPerRequest = 40_000

// validateMatching checks the matching rules and the GAEN export keys.
func (p Policy) validateMatching() error {
	if len(p.Matching) == 0 {
		return invalidf("matching: no rule; want %q, %q or both", MatchReciprocal, MatchOneSided)
	}
	for i, m := range p.Matching {
		if m != MatchReciprocal && m != MatchOneSided {
			return invalidf("matching: unknown rule %q; want %q or %q", m, MatchReciprocal, MatchOneSided)
		}
		if slices.Contains(p.Matching[:i], m) {
			return invalidf("matching: rule %q listed twice", m)
		}
	}
	seen := map[string]bool{}
	for i, k := range p.GAENExportKeys {
		if err := CheckAuthorityName(k.Name); err != nil {
			return fmt.Errorf("GAEN export key %d: %w", i, err)
		}
		if seen[k.Name] {
			return invalidf("GAEN export key %q listed twice", k.Name)
		}
		seen[k.Name] = true
		if _, err := k.ECDSA(); err != nil {
			return err
		}
	}
	return nil
}

// MaxPolicySize bounds a policy document.
const MaxPolicySize = 1 << 20

// Parse reads a policy document strictly and validates it.
func Parse(doc []byte) (Policy, error) {
	if len(doc) > MaxPolicySize {
		return Policy{}, invalidf("document is %d bytes, limit %d", len(doc), MaxPolicySize)
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return Policy{}, invalidf("%v", err)
	}
	if dec.More() {
		return Policy{}, invalidf("trailing data after the policy object")
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Canonical returns the canonical form of the policy: the bytes the
// attestation binds. It refuses an invalid policy.
func (p Policy) Canonical() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Authorities == nil {
		p.Authorities = []Authority{}
	}
	if p.GAENExportKeys == nil {
		p.GAENExportKeys = []ExportKey{}
	}
	// encoding/json writes struct fields in declaration order and we use
	// no maps or floats, so Marshal is already deterministic and compact.
	return json.Marshal(p)
}

// Bucket returns the index of the attenuation bucket attenuationDB falls in.
func (r Risk) Bucket(attenuationDB int) int {
	for i, t := range r.AttenuationThresholds {
		if attenuationDB <= t {
			return i
		}
	}
	return len(r.AttenuationThresholds)
}

// WeightedMinutes returns minutes weighted by attenuationDB's bucket, in
// hundredths of a minute so that scoring stays in integers.
func (r Risk) WeightedMinutes(minutes, attenuationDB int) int {
	return minutes * r.WeightsPercent[r.Bucket(attenuationDB)]
}

// Exposed reports whether a day's weighted minutes (in hundredths, as
// returned by WeightedMinutes and summed) make it an exposure.
func (r Risk) Exposed(weightedHundredths int) bool {
	return weightedHundredths >= r.MinimumWeightedMinutes*100
}
