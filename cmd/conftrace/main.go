// Command conftrace is everything people run outside the trusted execution
// environment: the demo, the relay, the device and health-authority tools,
// the auditor's verifier and the benchmarks. The backend is a binary of its
// own, cmd/conftraced, so that its measurement covers nothing else. This
// command only wires packages together; run "conftrace help" for the list
// of commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// cmdIO is where a command reads and writes; tests substitute buffers.
type cmdIO struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// command is one verb, possibly with sub-verbs.
type command struct {
	summary string
	run     func(ctx context.Context, cio cmdIO, args []string) error
	sub     map[string]command
	hidden  bool // not listed by help
}

// usageError marks errors in how a command was called (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func commands() map[string]command {
	return map[string]command{
		"bench": {summary: "benchmarks", sub: map[string]command{
			"bandwidth": {summary: "bytes of a daily exposure check on the wire, beside protocol v2 and a GAEN phone's download", run: runBenchBandwidth},
			"gps":       {summary: "GPS index against brute force on synthetic city traces", run: runBenchGPS},
			"index":     {summary: "exposure checks per second of the compact match index, beside a Go map", run: runBenchIndex},
			"ingest":    {summary: "uploads made durable per second, beside bare SQLite's same writes", run: runBenchIngest},
			"load":      {summary: "daily exposure checks a second end to end, beside the Oblivious HTTP floor", run: runBenchLoad},
			"observer":  {summary: "what the host sees of positive, negative, exposed and other phones", run: runBenchObserver},
			"restart":   {summary: "seconds to start over a store of many indexed pairs, beside decrypting the same bytes", run: runBenchRestart},
			"wire":      {hidden: true, run: runBenchBandwidth}, // the name of bench bandwidth before it compared with GAEN
		}},
		"demo":   {summary: "run the whole system on a simulated population", run: runDemo},
		"serve":  {hidden: true, run: runServeMoved},
		"relay":  {summary: "run an Oblivious HTTP relay in front of a backend", run: runRelay},
		"stats":  {summary: "print a backend's public statistics, with their differentially private noise", run: runStats},
		"verify": {summary: "verify a backend's attestation; print its identity and policy", run: runVerify},
		"policy": {summary: "the backend's policy", sub: map[string]command{
			"init": {summary: "write a policy listing the health authorities", run: runPolicyInit},
		}},
		"authority": {summary: "health authority tools", sub: map[string]command{
			"keygen":             {summary: "make an authority's signing key pair", run: runAuthorityKeygen},
			"result":             {summary: "sign a test result and submit it", run: runAuthorityResult},
			"gps":                {summary: "upload an infected patient's GPS trace", run: runAuthorityGPS},
			"verify-certificate": {summary: "check a patient's exposure certificate against the backend's attestation", run: runAuthorityVerifyCertificate},
			"portal":             {summary: "run the authority's web portal for staff", run: runAuthorityPortal},
			"users": {summary: "the portal's users", sub: map[string]command{
				"add":    {summary: "add a user; the password is read from standard input", run: runAuthorityUsersAdd},
				"remove": {summary: "remove a user", run: runAuthorityUsersRemove},
				"list":   {summary: "list the users", run: runAuthorityUsersList},
			}},
		}},
		"device": {summary: "a simulated phone", sub: map[string]command{
			"init":           {summary: "verify a backend and create a device for it", run: runDeviceInit},
			"meet":           {summary: "simulate an encounter with another device", run: runDeviceMeet},
			"log":            {summary: "print the daily keys' validity and the sightings", run: runDeviceLog},
			"hear":           {summary: "record a sighting of a device outside this system", run: runDeviceHear},
			"register-test":  {summary: "register a test; print its code", run: runDeviceRegisterTest},
			"check-result":   {summary: "poll the registered test's result", run: runDeviceCheckResult},
			"upload":         {summary: "upload daily keys and sightings after a positive result", run: runDeviceUpload},
			"check-exposure": {summary: "ask whether an encounter was with an infected user", run: runDeviceCheckExposure},
			"gps-check":      {summary: "check the device's GPS trace against infected patients'", run: runDeviceGPSCheck},
			"certificate":    {summary: "ask for an exposure certificate to show a hospital", run: runDeviceCertificate},
		}},
		"release": {summary: "governance: sign and check the releases phones accept", sub: map[string]command{
			"keygen": {summary: "make a governance member's signing key", run: runReleaseKeygen},
			"sign":   {summary: "sign a release statement (a build and its policy)", run: runReleaseSign},
			"verify": {summary: "check that every member signed a release statement; print it", run: runReleaseVerify},
		}},
		"gaen": {summary: "GAEN interoperability", sub: map[string]command{
			"import": {summary: "send a GAEN key export for the backend to import", run: runGAENImport},
		}},
		"enid": {summary: "Exposure Notification identifiers", sub: map[string]command{
			"derive": {summary: "print the RPIs (and AEMs) of a daily key", run: runEnidDerive},
		}},
	}
}

// runServeMoved answers the backend's old command with its new home.
func runServeMoved(context.Context, cmdIO, []string) error {
	return usagef("the backend is its own binary, the measured image: run conftraced (go run ./cmd/conftraced --help)")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, cmdIO{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}

// run dispatches args to a command and returns the process exit status.
func run(ctx context.Context, cio cmdIO, args []string) int {
	cmds := commands()
	path := "conftrace"
	for {
		if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
			printCommands(cio.stderr, path, cmds)
			if len(args) == 0 {
				return 2
			}
			return 0
		}
		c, ok := cmds[args[0]]
		if !ok {
			fmt.Fprintf(cio.stderr, "%s: unknown command %q (run \"%s help\")\n", path, args[0], path)
			return 2
		}
		path += " " + args[0]
		args = args[1:]
		if c.sub == nil {
			err := c.run(ctx, cio, args)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			default:
				fmt.Fprintf(cio.stderr, "%s: %v\n", path, err)
				var ue usageError
				if errors.As(err, &ue) {
					return 2
				}
				return 1
			}
		}
		cmds = c.sub
	}
}

func printCommands(w io.Writer, path string, cmds map[string]command) {
	names := make([]string, 0, len(cmds))
	for n, c := range cmds {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\ncommands:\n", path)
	for _, n := range names {
		fmt.Fprintf(w, "  %-16s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintf(w, "\nRun \"%s <command> --help\" for a command's flags.\n", path)
}

// newFlags returns a flag set that reports errors instead of exiting and
// prints its usage to cio.stderr.
func newFlags(cio cmdIO, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(cio.stderr)
	fs.Usage = func() {
		fmt.Fprintf(cio.stderr, "usage: conftrace %s\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and refuses stray positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", strings.Join(fs.Args(), " "))
	}
	return nil
}
