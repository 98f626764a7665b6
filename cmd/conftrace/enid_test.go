package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

// The GAEN vector lives with the enid package; see enid/testdata/README.md.
const enidVectorPath = "../../enid/testdata/en-crypto-v1.2.json"

type enidVector struct {
	IntervalNumberOfKey uint32 `json:"interval_number_of_key"`
	TEK                 string `json:"tek"`
	BLEMetadata         string `json:"ble_metadata"`
	Advertised          []struct {
		IntervalNumber uint32 `json:"interval_number"`
		RPI            string `json:"rpi"`
		AEM            string `json:"aem"`
	} `json:"advertised"`
}

func loadEnidVector(t *testing.T) enidVector {
	t.Helper()
	data, err := os.ReadFile(enidVectorPath)
	if err != nil {
		t.Fatal(err)
	}
	var v enidVector
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func deriveOut(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = runEnidDerive(t.Context(), cmdIO{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}, args)
	return out.String(), errb.String(), err
}

func TestEnidDeriveVector(t *testing.T) {
	v := loadEnidVector(t)
	start := fmt.Sprint(v.IntervalNumberOfKey)
	for _, withMeta := range []bool{false, true} {
		args := []string{"--tek", v.TEK, "--start", start, "--count", "144"}
		if withMeta {
			args = append(args, "--metadata", v.BLEMetadata)
		}
		out, stderr, err := deriveOut(t, args...)
		if err != nil {
			t.Fatalf("%v: %v (stderr %q)", args, err, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 144 || !strings.HasSuffix(out, "\n") {
			t.Fatalf("%v printed %d lines, want 144 newline-terminated lines", args, len(lines))
		}
		for _, a := range v.Advertised {
			want := fmt.Sprintf("%d %s", a.IntervalNumber, a.RPI)
			if withMeta {
				want += " " + a.AEM
			}
			if got := lines[a.IntervalNumber-v.IntervalNumberOfKey]; got != want {
				t.Errorf("%v: line for interval %d = %q, want %q", args, a.IntervalNumber, got, want)
			}
		}
		for i, l := range lines {
			fields := strings.Fields(l)
			wantFields := 2
			if withMeta {
				wantFields = 3
			}
			if len(fields) != wantFields || fields[0] != fmt.Sprint(v.IntervalNumberOfKey+uint32(i)) || l != strings.ToLower(l) {
				t.Errorf("line %d = %q: want %d lowercase fields starting with interval %d", i, l, wantFields, v.IntervalNumberOfKey+uint32(i))
			}
		}
	}
}

func TestEnidDeriveCount(t *testing.T) {
	v := loadEnidVector(t)
	a := v.Advertised[len(v.Advertised)-1]
	// Starting at the vector's last interval, one line must be exactly it.
	out, _, err := deriveOut(t, "--tek", strings.ToUpper(v.TEK), "--start", fmt.Sprint(a.IntervalNumber), "--count", "1")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d %s\n", a.IntervalNumber, a.RPI); out != want {
		t.Errorf("output = %q, want %q", out, want)
	}
}

func TestEnidDeriveErrors(t *testing.T) {
	const tek = "75c734c6dd1a782de7a965da5eb93125"
	tests := []struct {
		name string
		args []string
		want string // in the error message
	}{
		{"no tek", []string{"--start", "0"}, "--tek is required"},
		{"tek not hex", []string{"--tek", "zz", "--start", "0"}, "--tek is not valid hex"},
		{"tek odd length", []string{"--tek", tek[:31], "--start", "0"}, "--tek is not valid hex"},
		{"tek short", []string{"--tek", tek[:30], "--start", "0"}, "--tek must be 16 bytes, got 15"},
		{"tek long", []string{"--tek", tek + "00", "--start", "0"}, "--tek must be 16 bytes, got 17"},
		{"no start", []string{"--tek", tek}, "--start is required"},
		{"start not a number", []string{"--tek", tek, "--start", "x"}, "--start must be an interval number"},
		{"start negative", []string{"--tek", tek, "--start", "-1"}, "--start must be an interval number"},
		{"start too large", []string{"--tek", tek, "--start", "4294967296"}, "--start must be an interval number"},
		{"count zero", []string{"--tek", tek, "--start", "0", "--count", "0"}, "--count must be in 1..144, got 0"},
		{"count negative", []string{"--tek", tek, "--start", "0", "--count", "-3"}, "--count must be in 1..144"},
		{"count past a day", []string{"--tek", tek, "--start", "0", "--count", "145"}, "--count must be in 1..144, got 145"},
		{"past last interval", []string{"--tek", tek, "--start", "4294967290", "--count", "10"}, "interval out of range"},
		{"metadata not hex", []string{"--tek", tek, "--start", "0", "--metadata", "4008g000"}, "--metadata is not valid hex"},
		{"metadata empty", []string{"--tek", tek, "--start", "0", "--metadata", ""}, "--metadata is empty"},
		{"stray argument", []string{"--tek", tek, "--start", "0", "extra"}, "unexpected argument"},
		{"unknown flag", []string{"--tek", tek, "--start", "0", "--days", "2"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := deriveOut(t, tt.args...)
			if err == nil {
				t.Fatalf("%v succeeded, want an error containing %q", tt.args, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want it to contain %q", err, tt.want)
			}
			var ue usageError
			if !errors.As(err, &ue) {
				t.Errorf("error %q is not a usage error (exit status 2)", err)
			}
			if out != "" {
				t.Errorf("printed %q on stdout despite the error", out)
			}
		})
	}
}

func TestEnidDeriveHelp(t *testing.T) {
	out, stderr, err := deriveOut(t, "--help")
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help returned %v, want flag.ErrHelp", err)
	}
	if out != "" || !strings.Contains(stderr, "--start") && !strings.Contains(stderr, "-start") {
		t.Errorf("--help: stdout %q, stderr %q; want usage on stderr only", out, stderr)
	}
}
