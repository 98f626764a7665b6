package service_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/internal/service"
	"github.com/conftrace/conftrace/policy"
)

func TestCheckTEE(t *testing.T) {
	for _, kind := range []attest.TEE{attest.Sim, attest.SGX, attest.TDX, attest.SNP} {
		if err := service.CheckTEE(kind); err != nil {
			t.Errorf("CheckTEE(%q): %v", kind, err)
		}
	}
	for _, kind := range []attest.TEE{"", "sev", "SIM"} {
		if err := service.CheckTEE(kind); !errors.Is(err, service.ErrUnknownTEE) {
			t.Errorf("CheckTEE(%q) = %v, want ErrUnknownTEE", kind, err)
		}
	}
	// OpenTEE refuses the same kinds, before touching the directory.
	dir := t.TempDir()
	if _, err := service.OpenTEE("sev", dir); !errors.Is(err, service.ErrUnknownTEE) {
		t.Errorf("OpenTEE(\"sev\") = %v, want ErrUnknownTEE", err)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("OpenTEE of an unknown kind left %v in the directory (%v)", entries, err)
	}
}

// The simulated TEE keeps its platform key in the data directory, so that
// a restart derives the same sealing key and opens the sealed store.
func TestOpenTEESim(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, service.SimKeyFile)
	if _, err := os.Stat(keyFile); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("key file before OpenTEE: %v", err)
	}
	first, err := service.OpenTEE(attest.Sim, dir)
	if err != nil {
		t.Fatal(err)
	}
	if first.TEE() != attest.Sim {
		t.Fatalf("OpenTEE(sim) opened a %q TEE", first.TEE())
	}
	if fi, err := os.Stat(keyFile); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("OpenTEE(sim) did not create %s: %v", service.SimKeyFile, err)
	}
	k1, err := first.SealingKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := service.OpenTEE(attest.Sim, dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := second.SealingKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if k1 != k2 {
		t.Fatal("a second OpenTEE(sim) on the same directory derived another sealing key")
	}
	// Another directory is another platform: another key.
	other, err := service.OpenTEE(attest.Sim, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if k3, err := other.SealingKey(ctx); err != nil || k3 == k1 {
		t.Fatalf("OpenTEE(sim) on another directory: same key %v, %v", k3 == k1, err)
	}
}

// Serve announces what it attests, serves the bundle, and on cancellation
// shuts down gracefully and removes its address file.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	tee, err := service.OpenTEE(attest.Sim, dir)
	if err != nil {
		t.Fatal(err)
	}
	lab, err := authority.GenerateKey("lab-1")
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Default()
	pol.Authorities = []policy.Authority{{Name: lab.Name, PublicKey: lab.PublicKey()}}
	var logs bytes.Buffer
	svc, err := service.Open(t.Context(), service.Config{
		DataDir: filepath.Join(dir, "data"), Policy: pol, TEE: tee,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	addrFile := filepath.Join(t.TempDir(), "addr")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- svc.Serve(ctx, ln, addrFile) }()

	// The listener is open, so this waits for Serve to accept.
	resp, err := http.Get("http://" + addr + api.PathAttestation)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s, %v", api.PathAttestation, resp.Status, err)
	}
	want, err := json.Marshal(svc.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(body, want) {
		t.Fatalf("served bundle differs from the service's:\n%s\nwant\n%s", body, want)
	}
	m := tee.(interface{ Measurement() []byte }).Measurement()
	c, err := client.New(t.Context(), client.Config{Server: "http://" + addr, Expectations: attest.Expectations{Measurements: [][]byte{m}, AllowSimulated: true}})
	if err != nil {
		t.Fatalf("a client refused the served bundle: %v", err)
	}
	if id := c.Identity(); id.TEE != attest.Sim || !bytes.Equal(id.Measurement, m) {
		t.Fatalf("attested identity %+v", id)
	}
	if b, err := os.ReadFile(addrFile); err != nil || string(b) != addr+"\n" {
		t.Fatalf("address file while serving: %q, %v; want %q", b, err, addr+"\n")
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve after cancellation: %v, want nil (a graceful shutdown)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
	if _, err := os.Stat(addrFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("address file after Serve returned: %v, want it removed", err)
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Error("the address still accepts connections after Serve returned")
	}

	// Serve has returned, so nothing writes the log any more.
	doc, err := pol.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	policyHash := sha256.Sum256(doc)
	text := logs.String()
	var listening, simWarning int
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		switch rec["msg"] {
		case "listening":
			listening++
			for k, v := range map[string]string{
				"addr":          addr,
				"tee":           string(attest.Sim),
				"measurement":   hex.EncodeToString(m),
				"policy_sha256": hex.EncodeToString(policyHash[:]),
			} {
				if rec[k] != v {
					t.Errorf("listening: %s = %v, want %s", k, rec[k], v)
				}
			}
		default:
			if msg, _ := rec["msg"].(string); rec["level"] == "WARN" && strings.HasPrefix(msg, "simulated TEE") {
				simWarning++
			}
		}
	}
	if listening != 1 {
		t.Errorf("%d \"listening\" records, want 1; logs:\n%s", listening, text)
	}
	if simWarning != 1 {
		t.Errorf("%d warnings that the TEE is simulated, want 1; logs:\n%s", simWarning, text)
	}
}
