package service_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/bhttp"
	"github.com/conftrace/conftrace/internal/service"
	"github.com/conftrace/conftrace/ohttp"
	"github.com/conftrace/conftrace/policy"
)

// floodConns connections each send all but the last byte of a 1 MiB
// encapsulated request to the gateway, then stall. Before the gateway
// bounded what it buffers, 600 of them took a backend from 16 MB to 1.1 GB
// in 30 s; inside an enclave of fixed size that is a crash.
const (
	floodConns    = 1000
	floodDeclared = 1 << 20
	// floodMaxGrowth is the memory the backend may add under the flood,
	// its connections, goroutines and buffered bodies together (and the
	// attackers' goroutines, which run in this process too).
	floodMaxGrowth = 100 << 20
)

// The flood holds the backend's memory within floodMaxGrowth, a
// well-behaved request is answered in the middle of it, and the backend
// stays up: it still answers afterwards and shuts down gracefully.
func TestStalledBodyFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 connections")
	}
	dir := t.TempDir()
	tee, err := service.OpenTEE(attest.Sim, dir)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.Open(t.Context(), service.Config{DataDir: filepath.Join(dir, "data"), Policy: policy.Default(), TEE: tee})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- svc.Serve(ctx, ln, "") }()
	stop := sync.OnceValue(func() error { cancel(); return <-served })
	defer stop()

	// The well-behaved request is a decoy, made before the baseline so that
	// only the server's side of it is measured.
	good := newDecoy(t, svc.Bundle.KeyConfigs)
	goodClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if err := good.send(goodClient, addr); err != nil {
		t.Fatalf("decoy before the flood: %v", err)
	}

	// Give back what earlier tests left free, so that the baseline is what
	// the process holds now.
	debug.FreeOSMemory()
	base := residentBytes()
	peak := base
	stopSampling, sampled := make(chan struct{}), make(chan struct{})
	overLimit := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if m := residentBytes(); m > peak {
				peak = m
				if peak-base > floodMaxGrowth {
					close(overLimit)
					return
				}
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	// Every attacker sends from this one buffer and reads its answer into
	// a small one, so that the test's own memory stays small beside the
	// server's.
	chunk := make([]byte, 64<<10)
	header := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n",
		api.PathGateway, addr, ohttp.MediaTypeRequest, floodDeclared)
	var (
		mu       sync.Mutex
		open     []net.Conn
		closed   bool // no more connections: close those still dialing
		attacks  sync.WaitGroup
		started  sync.WaitGroup // sent something, or failed to
		settled  sync.WaitGroup // sent all they will, or were cut off
		failed   atomic.Int32   // could not connect or send anything
		refused  atomic.Int32   // answered 503 without its body being read
		finished = func() {
			mu.Lock()
			for _, c := range open {
				c.Close()
			}
			open, closed = nil, true
			mu.Unlock()
			attacks.Wait()
		}
	)
	defer finished()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	started.Add(floodConns)
	settled.Add(floodConns)
	for range floodConns {
		attacks.Go(func() {
			once := sync.OnceFunc(started.Done)
			defer once()
			settle := sync.OnceFunc(settled.Done)
			defer settle()
			c, err := dialer.DialContext(ctx, "tcp", addr)
			if err != nil {
				failed.Add(1)
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			open = append(open, c)
			mu.Unlock()
			// Keep what the kernel buffers for this side small too.
			c.(*net.TCPConn).SetWriteBuffer(16 << 10)
			if _, err := io.WriteString(c, header); err != nil {
				failed.Add(1)
				return
			}
			for left := floodDeclared - 1; left > 0; {
				n, err := c.Write(chunk[:min(left, len(chunk))])
				if err != nil {
					break
				}
				left -= n
				once()
			}
			once()
			settle()
			// Stall: never send the last byte, and wait for the server to
			// give up or the test to end.
			var b [16]byte
			if n, _ := io.ReadFull(c, b[:12]); n == 12 && bytes.HasPrefix(b[:n], []byte("HTTP/1.1 503")) {
				refused.Add(1)
			}
			io.Copy(io.Discard, c)
		})
	}
	allStarted, allSettled := make(chan struct{}), make(chan struct{})
	go func() { started.Wait(); close(allStarted) }()
	go func() { settled.Wait(); close(allSettled) }()
	select {
	case <-allStarted:
	case <-overLimit:
		t.Fatalf("memory grew by more than %d MiB before the %d connections had all started", floodMaxGrowth>>20, floodConns)
	case <-time.After(10 * time.Second):
		t.Fatalf("the %d connections did not all start within 10 s", floodConns)
	}
	if n := failed.Load(); n > floodConns/100 {
		t.Fatalf("%d of %d attacking connections failed to connect or send", n, floodConns)
	}

	// The flood is on: every connection is open and stalled, the server
	// holds what it buffers of them. A well-behaved request is answered.
	time.Sleep(500 * time.Millisecond)
	t0 := time.Now()
	if err := good.send(goodClient, addr); err != nil {
		t.Errorf("decoy during the flood: %v (after %v)", err, time.Since(t0).Round(time.Millisecond))
	}
	goodDuring := time.Since(t0)
	// Measure until every connection has sent all the server reads of it
	// (or it was cut off), and what the server holds is at its peak.
	select {
	case <-overLimit:
	case <-allSettled:
	case <-time.After(10 * time.Second):
		t.Log("the connections had not all settled after 10 s")
	}
	close(stopSampling)
	<-sampled
	growth := peak - base
	t.Logf("resident %.1f MiB before, peak %.1f MiB during the flood (+%.1f MiB); decoy answered in %v; %d connections refused unread, %d failed",
		mib(base), mib(peak), mib(growth), goodDuring.Round(time.Millisecond), refused.Load(), failed.Load())
	if growth > floodMaxGrowth {
		t.Errorf("memory grew by %.1f MiB under %d stalled 1 MiB bodies, want at most %d MiB", mib(growth), floodConns, floodMaxGrowth>>20)
	}

	// The server is up: it answers while the held connections stall, and
	// again once they are gone.
	if resp, err := goodClient.Get("http://" + addr + api.PathHealth); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("health during the flood: %v, %v", resp, err)
	} else {
		resp.Body.Close()
	}
	finished()
	if err := good.send(goodClient, addr); err != nil {
		t.Errorf("decoy after the flood: %v", err)
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned during the flood: %v", err)
	default:
	}
	if err := stop(); err != nil {
		t.Errorf("Serve after the flood: %v, want a graceful shutdown", err)
	}
}

// residentBytes is the memory the Go runtime holds from the OS: what it
// has mapped, less what it has given back.
func residentBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// decoy is a well-behaved gateway request: a padded decoy, encapsulated.
type decoy struct {
	cfg ohttp.KeyConfig
}

func newDecoy(t *testing.T, keyList []byte) decoy {
	cfgs, err := ohttp.ParseKeyConfigs(keyList)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ohttp.SelectKeyConfig(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	return decoy{cfg}
}

// send posts a fresh encapsulation of the decoy and checks that the
// gateway answered it: an encrypted Binary HTTP response. What the inner
// answer says is the enclave's business, not the HTTP layer's.
func (d decoy) send(c *http.Client, addr string) error {
	inner, err := (&bhttp.Request{
		Method: "POST", Scheme: "https", Authority: api.InnerAuthority, Path: api.PathDecoy,
		Header: []bhttp.Field{{Name: "date", Value: time.Now().UTC().Format(http.TimeFormat)}},
	}).MarshalPadded()
	if err != nil {
		return err
	}
	enc, rc, err := ohttp.EncapsulateRequest(d.cfg, inner)
	if err != nil {
		return err
	}
	resp, err := c.Post("http://"+addr+api.PathGateway, ohttp.MediaTypeRequest, bytes.NewReader(enc))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("gateway answered %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	plain, err := rc.DecapsulateResponse(body)
	if err != nil {
		return err
	}
	_, err = bhttp.ParseResponse(plain, bhttp.MaxSize)
	return err
}
