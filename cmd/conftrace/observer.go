package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"time"

	"github.com/conftrace/conftrace/internal/localbackend"
	"github.com/conftrace/conftrace/internal/observerbench"
	"github.com/conftrace/conftrace/policy"
)

// runBenchObserver plays the host of a local backend: it runs untested,
// negative, positive and exposed phones through it for simulated days,
// prints what the host saw of each group, and fails if the records tell
// the groups apart.
func runBenchObserver(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "bench observer", "bench observer [--days N] [--phones N] [--seed N] [--json]\n\n"+
		"Starts a local backend (a journal flush every 30 simulated minutes, answers released\n"+
		"on a 100 ms grid) and runs four groups of phones through it: never tested, tested\n"+
		"negative, tested positive and uploading, and exposed (met a positive phone on the\n"+
		"first day). Every phone makes one daily exchange a day, with reports of equal length.\n"+
		"It records what the host sees: every outer request's and answer's size and when the\n"+
		"answer completed, the connections, every change to the backend's files during each\n"+
		"exchange and at each flush. It exits non-zero unless the records are identical\n"+
		"between the groups (one answer size, one request size per report length, no store\n"+
		"write during an exchange, every answer on the release grid, flushes on schedule)\n"+
		"and the positive phones' uploads became durable and the exposed phones were told.\n"+
		"--json prints every record.")
	days := fs.Int("days", 7, "`N` simulated days of exchanges, at least 3")
	phones := fs.Int("phones", 8, "`N` phones in each group")
	seed := fs.Uint64("seed", 1, "`N` seeds the exchange times, sightings and phases")
	asJSON := fs.Bool("json", false, "print the whole report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *days < 3 || *days > observerbench.MaxDays {
		return usagef("--days: %d is not in 3..%d", *days, observerbench.MaxDays)
	}
	if *phones < 1 || *phones > observerbench.MaxPhones {
		return usagef("--phones: %d is not in 1..%d", *phones, observerbench.MaxPhones)
	}
	dir, err := os.MkdirTemp("", "conftrace-observer-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rep, err := observerbench.Run(ctx, observerbench.Config{Days: *days, Phones: *phones, Seed: *seed, Dir: dir, Start: startObserved})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(cio.stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(cio.stdout)
	}
	if err != nil {
		return err
	}
	if len(rep.Failures) > 0 {
		return errors.New("the host can tell the groups apart, or the run was vacuous (see the failed checks)")
	}
	return nil
}

// startObserved starts the local backend the observer watches.
func startObserved(ctx context.Context, dir string, pol policy.Policy, now func() time.Time) (*observerbench.Backend, error) {
	b, err := localbackend.Start(ctx, localbackend.Config{Dir: dir, Policy: &pol, Now: now})
	if err != nil {
		return nil, err
	}
	return &observerbench.Backend{
		URL: b.URL, Expectations: b.Expectations(), Authority: b.Authority,
		Maintain: b.Service.Maintain, FlushDue: b.Service.Enclave.FlushDue, Close: b.Close,
	}, nil
}
