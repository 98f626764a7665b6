package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/enid"
	"github.com/conftrace/conftrace/release"
)

// errNoAuthorization is returned by device upload when the device holds no
// upload authorization.
var errNoAuthorization = errors.New("no upload authorization: check-result must report positive first")

// stateFlag registers the --state flag every device command takes.
func stateFlag(fs *flag.FlagSet) *string {
	return fs.String("state", "", "the device's state `directory` (required)")
}

// deviceCommand is what the commands on an existing device share: a flag
// set with --state, to which each adds its own flags.
type deviceCommand struct {
	*flag.FlagSet
	state *string
}

func newDeviceCommand(cio cmdIO, name, usage string) deviceCommand {
	fs := newFlags(cio, name, usage)
	return deviceCommand{FlagSet: fs, state: stateFlag(fs)}
}

// open parses args, runs the command's own checks of its flags (check may
// be nil) and opens the device in --state.
func (c deviceCommand) open(ctx context.Context, args []string, check func() error) (*device.Device, error) {
	if err := parseFlags(c.FlagSet, args); err != nil {
		return nil, err
	}
	if *c.state == "" {
		return nil, usagef("--state is required")
	}
	if check != nil {
		if err := check(); err != nil {
			return nil, err
		}
	}
	return device.Open(ctx, *c.state)
}

// deviceClient verifies the backend that a device's state names, with what
// the device pinned, and returns a client for it. A device that pins
// nothing yet (made by an older conftrace) pins what it sees now and says
// so; one that accepts any code says so every time.
func deviceClient(ctx context.Context, cio cmdIO, d *device.Device) (*client.Client, error) {
	cfg := d.Config()
	tofu := errors.Is(cfg.Pinned(), device.ErrNothingPinned)
	ccfg, err := clientConfig(cfg, d)
	if err != nil {
		return nil, fmt.Errorf("device state %s: %w", d.Dir(), err)
	}
	if cfg.AnyCode {
		warnAnyCode(cio)
	}
	c, err := client.New(ctx, ccfg)
	if err != nil || !tofu {
		return c, err
	}
	id, pol := c.Identity(), sha256.Sum256(c.PolicyDocument())
	if err := d.Pin(id.Measurement, pol[:]); err != nil {
		return nil, err
	}
	fmt.Fprintf(cio.stderr, "this device pinned no backend yet: it now trusts on first use measurement %x and policy sha256 %x, and refuses any other\n", id.Measurement, pol)
	return c, nil
}

// clientConfig returns the client configuration that verifies cfg's
// backend as cfg pins it; with d, the device remembers the release
// statements it accepts.
func clientConfig(cfg device.Config, d *device.Device) (client.Config, error) {
	exp, err := cfg.Expectations()
	if err != nil {
		return client.Config{}, err
	}
	pol, err := cfg.PolicyPin()
	if err != nil {
		return client.Config{}, err
	}
	gov, err := cfg.GovernanceSet()
	if err != nil {
		return client.Config{}, err
	}
	cc := client.Config{Server: cfg.Server, Relay: cfg.Relay, Expectations: exp, PolicySHA256: pol,
		Governance: gov, MinReleaseSequence: cfg.ReleaseSequence}
	if d != nil {
		cc.ReleaseAccepted = d.AcceptRelease
	}
	return cc, nil
}

// warnAnyCode says, at every use, that a device trusts whatever it meets.
func warnAnyCode(cio cmdIO) {
	fmt.Fprintln(cio.stderr, "WARNING: this device accepts any code and any policy (--any-measurement): whoever runs the backend can read what it sends. For development only.")
}

// pinFlags are the flags of device init that say what the device trusts.
type pinFlags struct {
	measurements   measurementsFlag
	governance     string
	anyCode        bool
	allowSimulated bool
}

func (p *pinFlags) register(fs *flag.FlagSet) {
	fs.Var(&p.measurements, "measurement", "pin this TEE measurement in `hex` (repeatable), with the policy the backend attests now;\n"+
		"without --measurement, --governance or --any-measurement the device pins the measurement and policy it sees first")
	fs.StringVar(&p.governance, "governance", "", "pin the governance set in this `file` (see conftrace release): accept the code and policy\n"+
		"that a release statement signed by all its members admits, and never an older statement than one accepted")
	fs.BoolVar(&p.anyCode, "any-measurement", false, "accept any code and any policy, and warn at every use (development only)")
	fs.BoolVar(&p.allowSimulated, "allow-simulated", false, "accept a backend in the simulated TEE, which protects nothing (development only)")
}

// config returns the device configuration the flags ask for, before the
// backend is seen.
func (p *pinFlags) config(server, relay string) (device.Config, error) {
	n := 0
	for _, set := range []bool{len(p.measurements) > 0, p.governance != "", p.anyCode} {
		if set {
			n++
		}
	}
	if n > 1 {
		return device.Config{}, usagef("--measurement, --governance and --any-measurement do not go together")
	}
	cfg := device.Config{Server: server, Relay: relay, AnyCode: p.anyCode, AllowSimulated: p.allowSimulated}
	for _, m := range p.measurements {
		cfg.Measurements = append(cfg.Measurements, hex.EncodeToString(m))
	}
	if p.governance != "" {
		b, err := os.ReadFile(p.governance)
		if err != nil {
			return device.Config{}, fmt.Errorf("--governance: %w", err)
		}
		if _, err := release.ParseGovernance(b); err != nil {
			return device.Config{}, fmt.Errorf("--governance %s: %w", p.governance, err)
		}
		cfg.Governance = string(b)
	}
	return cfg, nil
}

// runDeviceInit verifies a backend and creates a device that trusts it.
func runDeviceInit(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "device init", "device init --state DIR --server URL [--relay URL] [--measurement HEX ... | --governance FILE | --any-measurement] [--allow-simulated]\n\n"+
		"Verifies the backend's attestation, then creates a device in DIR that will\n"+
		"verify it before every request. The device pins what it sees first: the\n"+
		"backend's measurement and policy (trust on first use), or the policy with the\n"+
		"measurements of --measurement, and refuses any other code or policy after.\n"+
		"With --governance it pins a governance set instead, and follows the upgrades\n"+
		"its members sign (see conftrace release).")
	state := stateFlag(fs)
	server := fs.String("server", "", "the backend's base `URL` (required)")
	relay := fs.String("relay", "", "an Oblivious HTTP relay's `URL` to send requests through (optional)")
	var pins pinFlags
	pins.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *state == "":
		return usagef("--state is required")
	case *server == "":
		return usagef("--server is required")
	}
	cfg, err := pins.config(*server, *relay)
	if err != nil {
		return err
	}
	if cfg.AnyCode {
		warnAnyCode(cio)
	}
	// Verify first: a device that cannot trust its backend is no use.
	ccfg, err := clientConfig(cfg, nil)
	if err != nil {
		return err
	}
	c, err := client.New(ctx, ccfg)
	if err != nil {
		return err
	}
	id, pol := c.Identity(), sha256.Sum256(c.PolicyDocument())
	var pinned string
	switch st, ok := c.Release(); {
	case ok:
		cfg.ReleaseSequence = st.Sequence
		pinned = fmt.Sprintf("pinned the governance set of %s; accepted release statement %d %q", memberNames(ccfg.Governance), st.Sequence, st.Note)
	case cfg.AnyCode:
		pinned = "pinned nothing: any code and any policy are accepted"
	case len(cfg.Measurements) == 0:
		cfg.Measurements, cfg.PolicySHA256 = []string{hex.EncodeToString(id.Measurement)}, hex.EncodeToString(pol[:])
		pinned = fmt.Sprintf("pinned on first use: measurement %x and policy sha256 %x; any other code or policy is refused", id.Measurement, pol)
	default:
		cfg.PolicySHA256 = hex.EncodeToString(pol[:])
		pinned = fmt.Sprintf("pinned the measurements given and policy sha256 %x; any other policy is refused", pol)
	}
	if _, err := device.Create(ctx, *state, cfg); err != nil {
		return err
	}
	fmt.Fprintf(cio.stdout, "device created in %s; backend attested: tee %s, measurement %x\n%s\n", *state, id.TEE, id.Measurement, pinned)
	return nil
}

// memberNames lists a governance set's members.
func memberNames(g *release.Governance) string {
	names := make([]string, len(g.Members))
	for i, m := range g.Members {
		names[i] = m.Name
	}
	return strings.Join(names, " and ")
}

// runDeviceMeet simulates a Bluetooth encounter between two devices.
func runDeviceMeet(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "device meet", "device meet --state DIR --peer DIR --at RFC3339 --minutes N [--attenuation DB] [--peer-attenuation DB]\n\n"+
		"Simulates an encounter: both devices log, for every 10-minute interval they\n"+
		"overlapped, the identifier they broadcast and the one they heard.")
	state := stateFlag(fs)
	peer := fs.String("peer", "", "the other device's state `directory` (required)")
	atStr := fs.String("at", "", "when the encounter began, an RFC 3339 `time` such as 2026-03-01T10:00:00Z (required)")
	minutes := fs.Int("minutes", 0, "how long the encounter lasted, in `minutes`, 1..1440 (required)")
	att := fs.Int("attenuation", 50, "the attenuation at which this device heard the peer, `dB` 0..255 (lower is closer)")
	peerAtt := -1
	fs.Func("peer-attenuation", "the attenuation at which the peer heard this device, `dB` 0..255 (default: --attenuation)", func(s string) error {
		n, err := strconv.Atoi(s)
		peerAtt = n
		return err
	})
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if !isSet(fs, "peer-attenuation") {
		peerAtt = *att
	}
	switch {
	case *state == "":
		return usagef("--state is required")
	case *peer == "":
		return usagef("--peer is required")
	case *atStr == "":
		return usagef("--at is required")
	case *minutes < 1 || *minutes > 24*60:
		return usagef("--minutes must be in 1..1440, got %d", *minutes)
	case *att < 0 || *att > 255:
		return usagef("--attenuation must be in 0..255, got %d", *att)
	case peerAtt < 0 || peerAtt > 255:
		return usagef("--peer-attenuation must be in 0..255, got %d", peerAtt)
	}
	at, err := time.Parse(time.RFC3339, *atStr)
	if err != nil {
		return usagef("--at %q: want an RFC 3339 time such as 2026-03-01T10:00:00Z", *atStr)
	}
	a, err := device.Open(ctx, *state)
	if err != nil {
		return err
	}
	b, err := device.Open(ctx, *peer)
	if err != nil {
		return err
	}
	n, err := device.Meet(ctx, a, b, at, time.Duration(*minutes)*time.Minute, uint8(*att), uint8(peerAtt))
	if err != nil {
		return err
	}
	fmt.Fprintf(cio.stdout, "recorded %d sightings on each device\n", n)
	return nil
}

// runDeviceLog prints the device's daily keys' validity and its sightings.
func runDeviceLog(ctx context.Context, cio cmdIO, args []string) error {
	cmd := newDeviceCommand(cio, "device log", "device log --state DIR\n\n"+
		"Prints when each of the device's daily keys is valid (never the keys\n"+
		"themselves), then the sightings it recorded, one per line:\n"+
		"key <rolling-start-interval> <rolling-period> <valid-from RFC3339> <valid-until RFC3339>\n"+
		"sighting <interval> <heard-rpi-hex> <minutes> <attenuation-db>")
	d, err := cmd.open(ctx, args, nil)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(cio.stdout)
	for _, k := range d.Keys(0, math.MaxUint32) {
		fmt.Fprintf(w, "key %d %d %s %s\n", k.Start, k.Period, k.Start.Time().Format(time.RFC3339), k.End().Time().Format(time.RFC3339))
	}
	for _, s := range d.Log().Sightings(0, math.MaxUint32) {
		fmt.Fprintf(w, "sighting %d %x %d %d\n", s.Interval, s.Heard[:], s.Minutes, s.Attenuation)
	}
	return w.Flush()
}

// runDeviceHear records a sighting of an RPI broadcast by a device outside
// this system.
func runDeviceHear(ctx context.Context, cio cmdIO, args []string) error {
	cmd := newDeviceCommand(cio, "device hear", "device hear --state DIR --rpi HEX --at RFC3339 [--minutes N] [--attenuation DB]\n\n"+
		"Records a sighting of a Rolling Proximity Identifier broadcast by a device\n"+
		"outside this system, such as a phone of a GAEN country's app.")
	rpiHex := cmd.String("rpi", "", "the heard RPI, 16 bytes in `hex` (required)")
	atStr := cmd.String("at", "", "when it was heard, an RFC 3339 `time` (required)")
	minutes := cmd.Int("minutes", 10, "how long it was heard, in `minutes`, 1..60")
	att := cmd.Int("attenuation", 50, "the attenuation at which it was heard, `dB` 0..255 (lower is closer)")
	var (
		rpi enid.RPI
		at  time.Time
	)
	check := func() error {
		b, err := hex.DecodeString(*rpiHex)
		switch {
		case *rpiHex == "":
			return usagef("--rpi is required")
		case err != nil || len(b) != len(rpi):
			return usagef("--rpi %q: want 16 bytes of hex", *rpiHex)
		case *atStr == "":
			return usagef("--at is required")
		case *minutes < 1 || *minutes > contactlog.MaxMinutes:
			return usagef("--minutes must be in 1..%d, got %d", contactlog.MaxMinutes, *minutes)
		case *att < 0 || *att > 255:
			return usagef("--attenuation must be in 0..255, got %d", *att)
		}
		rpi = enid.RPI(b)
		if at, err = time.Parse(time.RFC3339, *atStr); err != nil {
			return usagef("--at %q: want an RFC 3339 time such as 2026-03-01T10:00:00Z", *atStr)
		}
		return nil
	}
	d, err := cmd.open(ctx, args, check)
	if err != nil {
		return err
	}
	if err := d.Hear(ctx, rpi, at, *minutes, uint8(*att)); err != nil {
		return err
	}
	fmt.Fprintln(cio.stdout, "recorded 1 sighting")
	return nil
}

// runDeviceRegisterTest registers a new test and prints its code.
func runDeviceRegisterTest(ctx context.Context, cio cmdIO, args []string) error {
	cmd := newDeviceCommand(cio, "device register-test", "device register-test --state DIR\n\n"+
		"Makes a new test secret, replacing any earlier test, and prints the code to\n"+
		"show the test site.")
	d, err := cmd.open(ctx, args, nil)
	if err != nil {
		return err
	}
	code, err := d.RegisterTest(time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(cio.stdout, code)
	return nil
}

// runDeviceCheckResult polls the registered test's result and saves it.
func runDeviceCheckResult(ctx context.Context, cio cmdIO, args []string) error {
	cmd := newDeviceCommand(cio, "device check-result", "device check-result --state DIR\n\n"+
		"Asks the backend for the registered test's result and prints pending,\n"+
		"negative or positive. A positive result's upload authorization is saved\n"+
		"for device upload.")
	d, err := cmd.open(ctx, args, nil)
	if err != nil {
		return err
	}
	t, err := d.Test()
	if err != nil {
		return err
	}
	c, err := deviceClient(ctx, cio, d)
	if err != nil {
		return err
	}
	ex, err := dailyExchange(ctx, d, c, exchangeParts{poll: true})
	if err != nil {
		return refused("the result poll", err)
	}
	if ex.Result == nil {
		return errors.New("the backend's answer carries no result")
	}
	resp := *ex.Result
	if t, err = d.Test(); err != nil {
		return err
	}
	fmt.Fprintln(cio.stdout, resp.Result)
	if resp.Result == api.Positive {
		// Only the one word goes to stdout, for scripts; what to do next
		// goes to stderr, for people.
		switch {
		case resp.Uploaded:
			fmt.Fprintln(cio.stderr, "the contacts of this test were already uploaded")
		case resp.UploadPending:
			fmt.Fprintln(cio.stderr, "the contacts of this test were uploaded and are not durable yet: run check-result again later to confirm")
		case resp.UploadAuthorization == nil:
			fmt.Fprintln(cio.stderr, "the upload authorization has expired; ask the test site for a new test")
		default:
			fmt.Fprintf(cio.stderr, "upload authorized until %s: run device upload to share your contacts\n", t.ExpiresAt.Format(time.RFC3339))
		}
	}
	return nil
}

// runDeviceUpload uploads the daily keys and sightings of the retention
// window with the saved upload authorization.
func runDeviceUpload(ctx context.Context, cio cmdIO, args []string) error {
	cmd := newDeviceCommand(cio, "device upload", "device upload --state DIR\n\n"+
		"Uploads the device's daily keys and sightings of the backend's retention\n"+
		"window, with the upload authorization that a positive check-result saved, and\n"+
		"prints how many the backend took. The backend writes the upload on its clock:\n"+
		"check-result says uploaded once it is durable.\n\n"+
		"Without a positive result's authorization, it uploads under the order\n"+
		"authorization that check-exposure saved (n-order notifications), if the device\n"+
		"holds one: as a source of the next order, from the exposing day on.")
	d, err := cmd.open(ctx, args, nil)
	if err != nil {
		return err
	}
	t, err := d.Test()
	if errors.Is(err, device.ErrNoTest) || err == nil && t.UploadAuthorization == nil {
		// No result to upload under: an exposure's, if any (device_order.go).
		return uploadOrder(ctx, cio, d)
	}
	if err != nil {
		return err
	}
	c, err := deviceClient(ctx, cio, d)
	if err != nil {
		return err
	}
	if len(d.Keys(enid.IntervalOf(c.Policy().WindowStart(time.Now())), enid.IntervalOf(time.Now())+1)) == 0 {
		// Keep the single-use authorization for when there is something
		// to upload.
		return fmt.Errorf("nothing to upload: the device broadcast nothing in the last %d days", c.Policy().RetentionDays)
	}
	ex, err := dailyExchange(ctx, d, c, exchangeParts{upload: true})
	switch {
	case err != nil:
		return refused("the upload", err)
	case ex.UploadError != nil:
		return refused("the upload", ex.UploadError)
	case ex.Upload == nil:
		return errors.New("the backend's answer says neither accepted nor refused")
	}
	resp := *ex.Upload
	fmt.Fprintf(cio.stdout, "accepted %s, %s\n", plural(resp.Sightings, "sighting"), plural(resp.Keys, "daily key"))
	if !resp.Durable {
		// The backend writes uploads on its clock, not when they arrive.
		fmt.Fprintf(cio.stderr, "the upload becomes durable by %s; check-result then says it was uploaded\n", time.Unix(resp.DurableBy, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

// runDeviceCheckExposure asks the backend whether any of the device's
// encounters was with an infected user.
func runDeviceCheckExposure(ctx context.Context, cio cmdIO, args []string) error {
	cmd := newDeviceCommand(cio, "device check-exposure", "device check-exposure --state DIR [--json]\n\n"+
		"Sends the contact tuples of the backend's retention window and prints exposed\n"+
		"(exposed at order N, for N above 1) or not exposed; with --json, the backend's\n"+
		"whole answer: whether exposed, at which order, the last day of exposure and by\n"+
		"which rules, and, only if the attested policy's answers are detailed, per day\n"+
		"the minutes, weighted minutes and closest attenuation. An order authorization\n"+
		"in the answer is saved for device upload.")
	asJSON := cmd.Bool("json", false, "print the backend's answer as JSON")
	d, err := cmd.open(ctx, args, nil)
	if err != nil {
		return err
	}
	c, err := deviceClient(ctx, cio, d)
	if err != nil {
		return err
	}
	ex, err := dailyExchange(ctx, d, c, exchangeParts{})
	if err != nil {
		return refused("the exposure check", err)
	}
	resp := ex.Exposure
	if *asJSON {
		b, err := json.MarshalIndent(resp, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding answer: %w", err)
		}
		_, err = cio.stdout.Write(append(b, '\n'))
		return err
	}
	switch {
	case resp.Exposed && resp.Order > 1:
		fmt.Fprintf(cio.stdout, "exposed at order %d\n", resp.Order)
	case resp.Exposed:
		fmt.Fprintln(cio.stdout, "exposed")
	default:
		fmt.Fprintln(cio.stdout, "not exposed")
	}
	noteOrderAuthorization(cio, resp)
	return nil
}

// plural returns "1 thing" or "n things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// exchangeParts is what a device's exchange asks beside its exposure
// check (see dailyExchange).
type exchangeParts struct {
	// poll sends the test's secret even once its result is settled.
	poll bool
	// upload uploads under the test's saved authorization or the polled
	// result; order, if set, uploads under this order authorization
	// instead (n-order notifications).
	upload bool
	order  []byte
	// nonce, if set, asks for an exposure certificate with it.
	nonce []byte
}

// dailyExchange makes the device's exchange with its backend, as a phone
// makes its daily one: its report always, the secret of its test while
// the test is not settled (pending, or positive and not durably uploaded)
// or when p.poll asks for it, and the upload and certificate request p
// asks for. Whatever it asks, the exchange has one shape on the wire. The
// exposure answer and the poll's are saved.
func dailyExchange(ctx context.Context, d *device.Device, c *client.Client, p exchangeParts) (api.ExchangeResponse, error) {
	daily := client.Daily{Report: d.Report(c.Policy(), time.Now()), CertificateNonce: p.nonce}
	defer daily.Report.Clear()
	if t, err := d.Test(); err == nil && (p.poll || p.upload || t.Result != api.Negative && !t.Uploaded) {
		daily.Secret = t.Secret
		if p.upload {
			daily.Upload, daily.Authorization = true, t.UploadAuthorization
		}
	}
	if p.order != nil {
		daily.Upload, daily.Authorization = true, p.order
	}
	resp, err := c.Exchange(ctx, daily)
	if err != nil {
		return resp, err
	}
	if err := d.RecordExposure(resp.Exposure); err != nil {
		return resp, err
	}
	if resp.Result != nil {
		if _, err := d.RecordPoll(*resp.Result); err != nil {
			return resp, err
		}
	}
	return resp, nil
}
