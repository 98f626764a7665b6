package population

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// GAENBytesPerKey is what one published daily key costs every device in the
// GAEN-style baseline: 16 bytes of key, 4 of rolling start interval and 4 of
// rolling period, plus about 4 bytes of protobuf framing and transmission
// risk, as in the Exposure Notification key export format.
const GAENBytesPerKey = 28

// GAENKeysPerCase is how many daily keys a positive case publishes in the
// GAEN-style baseline at national scale: one for each day of a two-week
// infectious window.
const GAENKeysPerCase = 14

// ErrNotExact is returned (wrapped) by Summary.Check when the backend's
// answers differed from what the protocol requires.
var ErrNotExact = errors.New("population: the backend's exposure answers differ from the protocol's")

// Summary is what a run did, beside the ground truth.
type Summary struct {
	People   int    `json:"people"`
	Days     int    `json:"days"`
	Seed     uint64 `json:"seed"`
	AppUsers int    `json:"app_users"`
	// Live is set when the run drove a backend that keeps real time;
	// Nonce is the run's nonce in hex, when it had one.
	Live  bool   `json:"live_backend,omitempty"`
	Nonce string `json:"run_nonce,omitempty"`

	// DetailedAnswers is set when the backend's attested policy answers
	// in detail (every day's figures, GPS episodes), which the oracle then
	// compares too; by default answers are coarse.
	DetailedAnswers bool `json:"detailed_answers"`

	Infections    int `json:"infections"`
	Tests         int `json:"tests"`
	PositiveTests int `json:"positive_tests"`
	// Uploads counts the uploads the backend took, each in a phone's
	// daily exchange; UploadsDurable those of them that a later exchange
	// of the phone heard were durable. An upload of the run's last day
	// waits for an exchange the run does not make.
	Uploads        int `json:"uploads"`
	UploadsDurable int `json:"uploads_durable"`
	Checks         int `json:"exposure_checks"`
	Requests       int `json:"requests"`
	// DeviceRequestsPerDay is how many requests an app user's phone made a
	// simulated day: its daily exchange, which carries its check, its
	// result poll and its upload (GPS checks are not counted).
	DeviceRequestsPerDay float64 `json:"device_requests_per_day"`

	// Notified counts devices the backend told "exposed" at least once;
	// ShouldBeNotified those the protocol says it must tell at least once.
	Notified         int `json:"notified"`
	ShouldBeNotified int `json:"should_be_notified"`
	// NotifiedReciprocal and NotifiedOneSided count the notified devices
	// told "exposed" at least once on a day on which a sighting matched by
	// that rule; a device can count under both.
	NotifiedReciprocal int `json:"notified_reciprocal"`
	NotifiedOneSided   int `json:"notified_one_sided"`
	// MissedNotifications and FalseNotifications count exposure checks
	// whose answer was "not exposed" though the protocol requires
	// "exposed", and the reverse; MismatchedAnswers the checks whose answer
	// differed from the protocol's in anything it carries: the verdict,
	// the last exposed day and the rules, and in detailed answers every
	// figure of every day (minutes, weighted minutes, minimum
	// attenuation, rules, exposed).
	MissedNotifications int `json:"missed_notifications"`
	FalseNotifications  int `json:"false_notifications"`
	MismatchedAnswers   int `json:"mismatched_answers"`
	// ExchangeMismatches counts the daily exchanges whose result poll or
	// upload was not answered as the protocol requires: another result
	// than the authority signed (or pending before it did), an upload
	// refused or taken in part, an upload not durable two days on.
	ExchangeMismatches int `json:"exchange_mismatches"`
	// GAENImportMismatches counts GAEN imports whose count of imported
	// and skipped keys differed from the protocol's.
	GAENImportMismatches int  `json:"gaen_import_mismatches"`
	ProtocolExact        bool `json:"protocol_exact"`

	// GAENOnlyPeople counts the people running a foreign GAEN app;
	// GAENCases those of them whose keys reached the backend, in
	// GAENExports exports (one a day at most), of which the backend
	// imported GAENKeysImported keys.
	GAENOnlyPeople   int `json:"gaen_only_people"`
	GAENCases        int `json:"gaen_cases"`
	GAENExports      int `json:"gaen_exports"`
	GAENKeysImported int `json:"gaen_keys_imported"`

	// TrueContacts counts distinct people with at least 15 minutes within
	// 2 m of an uploading case during its infectious period (whether or not
	// they run the app); NotifiedTrueContacts those of them notified.
	TrueContacts         int     `json:"true_contacts"`
	TrueContactsWithApp  int     `json:"true_contacts_with_app"`
	NotifiedTrueContacts int     `json:"notified_true_contacts"`
	EpiRecall            float64 `json:"epi_recall"`
	EpiRecallAppUsers    float64 `json:"epi_recall_app_users"`
	EpiPrecision         float64 `json:"epi_precision"`

	// NotificationDelayDays[i] counts notified devices first notified i
	// days after the test of the case that exposed them was taken.
	NotificationDelayDays []int   `json:"notification_delay_days"`
	MedianDelayDays       float64 `json:"median_notification_delay_days"`

	// BytesPerDeviceDay is what an app user's phone sent and received a
	// day; GAENKeysPublished the daily keys that reached the backend
	// (uploads and GAEN exports), which every phone of a GAEN-style design
	// downloads: GAENBytesPerDeviceDay.
	BytesPerDeviceDay     float64 `json:"bytes_per_device_day"`
	GAENKeysPublished     int     `json:"gaen_keys_published"`
	GAENBytesPerDeviceDay float64 `json:"gaen_bytes_per_device_day"`
	// NationalCheckBytes is what a phone at national scale, with 2,000
	// sightings under 15 daily keys, spends on its daily exchange (request
	// and answer on the wire), measured against the same backend after
	// the run; 0 if it was not measured. Run leaves it to its caller.
	NationalCheckBytes int `json:"national_check_bytes,omitempty"`

	Daily []Day `json:"daily"`
	// Definitions says in words how the figures above are computed.
	Definitions map[string]string `json:"definitions"`

	// Timing holds every wall-clock figure; it is the only part of a
	// Summary that differs between two runs with the same seed, unless
	// the runs drove a live backend.
	Timing Timing `json:"timing"`

	// GPSSummary is set when Config.GPS was; its fields are inlined in
	// the JSON, and absent without GPS.
	*GPSSummary
	// OrderSummary is set when the backend's policy notifies beyond order
	// 1 (n-order notifications); its fields are inlined in the JSON, and
	// absent under max_order 1.
	*OrderSummary
}

// OrderSummary is what n-order notifications did in a run (orders.go).
type OrderSummary struct {
	// MaxOrder is the backend's policy's max_order.
	MaxOrder int `json:"max_order"`
	// OrderUploads counts the uploads the backend took under order
	// authorizations, as sources of order 2 or more.
	OrderUploads int `json:"order_uploads"`
	// NotifiedByOrder counts, for each order, the devices told "exposed"
	// at that order at least once; a device can count under several.
	NotifiedByOrder map[int]int `json:"notified_by_order"`
	// SecondOrderInfections counts the true second-order infections (see
	// world.secondOrder), those of them with the app, those of these the
	// backend told "exposed" at least once, and those of these told so at
	// order 2 or more only: what n-order notifications added.
	SecondOrderInfections           int     `json:"second_order_infections"`
	SecondOrderInfectionsWithApp    int     `json:"second_order_infections_with_app"`
	NotifiedSecondOrderInfections   int     `json:"notified_second_order_infections"`
	SecondOrderNotifiedOnlyByNOrder int     `json:"second_order_notified_only_at_higher_orders"`
	SecondOrderRecall               float64 `json:"second_order_recall"`
	SecondOrderRecallAppUsers       float64 `json:"second_order_recall_app_users"`
}

// Day is one simulated day's events.
type Day struct {
	Date          string `json:"date"`
	Infections    int    `json:"infections"`
	Tests         int    `json:"tests"`
	PositiveTests int    `json:"positive_tests"`
	Uploads       int    `json:"uploads"`
	NewlyNotified int    `json:"newly_notified"`
}

// Timing holds the wall-clock figures of a run.
type Timing struct {
	TotalSeconds float64 `json:"total_seconds"`
	// Latencies of the phones' and authority's requests as the client saw
	// them (encryption, HTTP on loopback, backend), in milliseconds.
	LatencyP50Ms float64 `json:"latency_p50_ms"`
	LatencyP90Ms float64 `json:"latency_p90_ms"`
	LatencyP99Ms float64 `json:"latency_p99_ms"`
	LatencyMaxMs float64 `json:"latency_max_ms"`
	// Requests the backend served and how long it took to answer them
	// (from the request's arrival to the last byte of the answer), in
	// milliseconds; known only when the backend runs in-process.
	BackendRequests int     `json:"backend_requests,omitempty"`
	BackendP50Ms    float64 `json:"backend_p50_ms,omitempty"`
	BackendP90Ms    float64 `json:"backend_p90_ms,omitempty"`
	BackendP99Ms    float64 `json:"backend_p99_ms,omitempty"`
	BackendMaxMs    float64 `json:"backend_max_ms,omitempty"`
}

// SetBackendLatencies records the durations of the requests the backend
// served, as measured around its HTTP handler.
func (t *Timing) SetBackendLatencies(d []time.Duration) {
	l := slices.Clone(d)
	slices.Sort(l)
	t.BackendRequests = len(l)
	t.BackendP50Ms, t.BackendP90Ms, t.BackendP99Ms, t.BackendMaxMs = quantileMs(l, 0.5), quantileMs(l, 0.9), quantileMs(l, 0.99), quantileMs(l, 1)
}

// quantileMs returns the q quantile of sorted durations, in milliseconds.
func quantileMs(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, int(q*float64(len(sorted))))
	return float64(sorted[i].Microseconds()) / 1000
}

// Check returns an error wrapping ErrNotExact unless the protocol was
// exact, for GPS too when the run had GPS.
func (s *Summary) Check() error {
	if !s.ProtocolExact {
		return fmt.Errorf("%w: %d missed and %d false notifications, %d answers differing in anything they carry, %d exchanges whose poll or upload was answered wrong, %d GAEN imports counted wrong",
			ErrNotExact, s.MissedNotifications, s.FalseNotifications, s.MismatchedAnswers, s.ExchangeMismatches, s.GAENImportMismatches)
	}
	if g := s.GPSSummary; g != nil && !g.GPSProtocolExact {
		return fmt.Errorf("%w: GPS: %d missed and %d false notifications, %d answers differing in anything they carry", ErrNotExact, g.GPSMissed, g.GPSFalse, g.GPSMismatchedAnswers)
	}
	return nil
}

// addDelay counts a device first notified delay days after the test of
// the case that exposed it.
func (s *Summary) addDelay(delay int) {
	for len(s.NotificationDelayDays) <= delay {
		s.NotificationDelayDays = append(s.NotificationDelayDays, 0)
	}
	s.NotificationDelayDays[delay]++
}

// derive sets the figures that follow from the counts: exactness, the
// epidemiological ratios, the median delay and the bandwidth, given the
// bytes all devices sent and received and the requests they made.
func (s *Summary) derive(deviceBytes, deviceRequests int64) {
	s.ProtocolExact = s.MissedNotifications == 0 && s.FalseNotifications == 0 && s.MismatchedAnswers == 0 &&
		s.ExchangeMismatches == 0 && s.GAENImportMismatches == 0
	s.EpiRecall = ratio(s.NotifiedTrueContacts, s.TrueContacts)
	s.EpiRecallAppUsers = ratio(s.NotifiedTrueContacts, s.TrueContactsWithApp)
	s.EpiPrecision = ratio(s.NotifiedTrueContacts, s.Notified)
	s.MedianDelayDays = median(s.NotificationDelayDays)
	deviceDays := float64(max(1, s.AppUsers) * s.Days)
	s.BytesPerDeviceDay = math.Round(float64(deviceBytes) / deviceDays)
	s.DeviceRequestsPerDay = math.Round(float64(deviceRequests)/deviceDays*100) / 100
	s.GAENBytesPerDeviceDay = math.Round(float64(s.GAENKeysPublished*GAENBytesPerKey) / float64(s.Days))
}

// summaryDefinitions returns the definitions of a run's figures, with
// those of GPS, of live runs and of n-order notifications when the run had
// them.
func summaryDefinitions(withGPS, live, orders bool) map[string]string {
	defs := definitions()
	if withGPS {
		maps.Copy(defs, gpsDefinitions())
	}
	if orders {
		maps.Copy(defs, orderDefinitions())
	}
	if live {
		maps.Copy(defs, liveDefinitions())
	}
	return defs
}

// definitions returns the definitions of the Bluetooth figures.
func definitions() map[string]string {
	return map[string]string{
		"protocol_exact":            "every exposure check answered exactly as the protocol requires in everything the answer carries (coarse answers, the policy's default: exposed, the last exposed day, which rules matched on exposed days; detailed answers also every figure of every day: minutes, weighted minutes, minimum attenuation, reciprocal and one-sided flags, exposed), every result poll and upload of the daily exchanges answered as the protocol requires (exchange_mismatches), and every GAEN import took the keys the protocol says: the oracle recomputes each answer from the simulator's own record of what each phone heard and broadcast, against the uploads and imports the backend took by then, scored per UTC day with the attested policy",
		"detailed_answers":          "the backend's attested policy answers in detail (conftrace demo --detailed-answers), so every day's figures and the GPS episodes were compared too; otherwise answers are coarse",
		"missed_notifications":      "exposure checks answered 'not exposed' that the protocol says must be 'exposed'",
		"false_notifications":       "exposure checks answered 'exposed' that the protocol says must be 'not exposed'",
		"mismatched_answers":        "exposure checks whose answer differs from the protocol's in anything it carries (missed and false notifications included)",
		"exchange_mismatches":       "daily exchanges whose result poll or upload was answered other than the protocol requires: a result other than the one the authority signed (pending before it signed), an upload refused or taken in part, an upload still not durable two days after it was taken",
		"uploads":                   "uploads the backend took: each in the daily exchange of a positive app user's phone, the first after the user learnt the result (in the exchange of the day the authority signed it) and consented, carrying the same report (daily keys and sightings of the retention window) as the exposure check it travels with",
		"uploads_durable":           "uploads that a later exchange of the uploading phone heard were durable: the backend writes uploads to its store by journal flushes on its clock (hourly by default), not when they arrive; an upload of the last simulated day waits for an exchange the run does not make",
		"device_requests_per_day":   "requests an app user's phone made per simulated day: one daily exchange, which carries its exposure check, its result poll and its upload alike (GPS trace checks not counted; with a running backend, exchanges asked again because its day changed during them)",
		"notified":                  "devices told 'exposed' at least once",
		"notified_reciprocal":       "notified devices told 'exposed' with the reciprocal rule among those that matched on their exposed days: an uploading case's phone recorded this phone in the same encounter (shorter duration of the two, this phone's attenuation)",
		"notified_one_sided":        "notified devices told 'exposed' with the one-sided rule among those that matched on their exposed days: this phone heard an identifier of an imported GAEN key, or of an uploaded key when the policy lists one_sided (this phone's duration and attenuation)",
		"gaen_only_people":          "people who run a foreign GAEN app instead of this one (gaen share of those without the app): app phones record them, they never check",
		"gaen_cases":                "GAEN-only people who tested positive and consented, whose keys of the infectious window (two days before symptom onset, or the test, to the result) reached the backend in a signed GAEN export",
		"gaen_exports":              "signed GAEN key exports the simulator, as the GAEN-only people's key server, imported into the backend (one a day with new cases)",
		"gaen_keys_imported":        "daily keys the backend imported from those exports (it skips keys outside its retention window)",
		"true_contacts":             "distinct people with at least 15 minutes within 2 m of a case whose keys reached the backend (upload or GAEN export) during its infectious period (true proximity, before Bluetooth loss; app or not)",
		"epi_recall":                "notified true contacts / true contacts (limited by app adoption and Bluetooth loss)",
		"epi_recall_app_users":      "notified true contacts / true contacts running the app",
		"epi_precision":             "notified devices that are true contacts / notified devices",
		"notification_delay_days":   "histogram: days from the test of the (earliest-tested) case that exposed a device to its first notification",
		"bytes_per_device_day":      "Oblivious HTTP request and response bodies a device sent and received (its daily exchanges, each carrying the device's daily keys and sightings of the window, and with them its result polls and its upload), per app user and simulated day; the attestation bundle fetches and the GAEN imports (not a device's) are not counted",
		"gaen_bytes_per_device_day": "GAEN-style baseline: every daily key that reaches the backend (one per day of an uploading case's window, and every key of the GAEN exports) is downloaded once by every device, 28 bytes each, per simulated day",
		"national_check_bytes":      "the Oblivious HTTP request and answer bodies of one daily exchange of a phone with 2,000 sightings under 15 daily keys (a heavily social phone's two weeks at national scale), made through the client SDK against the same backend after the run; a GAEN-style phone downloads 14 keys of 28 bytes for every positive case, so the two cost the same at national_check_bytes / 392 positive cases a day",
	}
}

// liveDefinitions explain the figures of a run against a live backend.
func liveDefinitions() map[string]string {
	return map[string]string{
		"live_backend": "the run drove a running backend that keeps real time: the simulated days end yesterday inside its retention window, every request happened at real time while sightings, test dates and GPS fixes carry the simulated past, and each check's truth uses the window at the real time of that check; the counts are not reproducible across runs (the dates, so the weekdays, follow the calendar, and the GPS city moves with run_nonce)",
		"run_nonce":    "random per run and mixed with the seed into every identifier the backend sees (daily keys, test secrets, the GPS city's location), so that a run never matches, nor replays, what earlier runs left on the same backend",
	}
}

// ratio returns a/b rounded to four decimals, and 0 when b is 0.
func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(float64(a)/float64(b)*1e4) / 1e4
}

// median returns the median of the values counted by hist, a histogram.
func median(hist []int) float64 {
	n := 0
	for _, c := range hist {
		n += c
	}
	if n == 0 {
		return 0
	}
	seen := 0
	for i, c := range hist {
		seen += c
		if 2*seen >= n {
			return float64(i)
		}
	}
	return 0
}
