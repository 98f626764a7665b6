package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"strconv"

	"github.com/conftrace/conftrace/enid"
)

// runEnidDerive prints the RPIs (and, with --metadata, the AEMs) of a daily
// key, one interval per line, so that apps and auditors can check their own
// derivation against conftrace's.
func runEnidDerive(ctx context.Context, cio cmdIO, args []string) error {
	fs := newFlags(cio, "enid derive", "enid derive --tek HEX --start INTERVAL [--count N] [--metadata HEX]\n\n"+
		"Prints \"<interval> <rpi-hex>\" (and \" <aem-hex>\" with --metadata) for each of\n"+
		"count intervals from start, as the Exposure Notification spec v1.2 derives them.")
	tekHex := fs.String("tek", "", "the temporary exposure key, 16 bytes in `hex`")
	startStr := fs.String("start", "", "the first `interval` number (10-minute intervals since the Unix epoch); required")
	count := fs.Int("count", enid.RollingPeriod, "the number of intervals to print, 1..144")
	metaHex := fs.String("metadata", "", "Bluetooth metadata in `hex` to encrypt into an AEM per interval")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if !set["tek"] {
		return usagef("--tek is required")
	}
	tekBytes, err := hex.DecodeString(*tekHex)
	if err != nil {
		return usagef("--tek is not valid hex: %v", err)
	}
	if len(tekBytes) != len(enid.TEK{}) {
		return usagef("--tek must be %d bytes, got %d", len(enid.TEK{}), len(tekBytes))
	}
	if !set["start"] {
		return usagef("--start is required")
	}
	start, err := strconv.ParseUint(*startStr, 10, 32)
	if err != nil {
		return usagef("--start must be an interval number in 0..4294967295, got %q", *startStr)
	}
	if *count < 1 || *count > enid.RollingPeriod {
		return usagef("--count must be in 1..%d, got %d", enid.RollingPeriod, *count)
	}
	var meta []byte
	if set["metadata"] {
		if meta, err = hex.DecodeString(*metaHex); err != nil {
			return usagef("--metadata is not valid hex: %v", err)
		}
		if len(meta) == 0 {
			return usagef("--metadata is empty")
		}
	}

	key, err := enid.NewKey(enid.TEK(tekBytes), enid.Interval(start), *count)
	if err != nil {
		return usagef("%v", err)
	}
	w := bufio.NewWriter(cio.stdout)
	for j, rpi := range key.AppendRPIs(nil) {
		fmt.Fprintf(w, "%d %x", key.Start()+enid.Interval(j), rpi[:])
		if meta != nil {
			fmt.Fprintf(w, " %x", key.EncryptMetadata(rpi, meta))
		}
		w.WriteString("\n")
	}
	return w.Flush()
}
