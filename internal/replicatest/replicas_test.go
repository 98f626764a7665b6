package replicatest

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/internal/store/postgres/pgtest"
	"github.com/conftrace/conftrace/policy"
)

// The load of TestReplicas: positive phones that upload, each through the
// replica of its index modulo three; contacts that check. Contact j < 30
// met positive j % 20 (so every positive has a contact, and the contacts
// that must be exposed are known); contact 30 + k met contact k only, and
// must not be exposed.
const (
	positives = 20
	contacts  = 40
	exposed   = 30
	// killAfter is how many uploads the victim answers before it is
	// killed: with uploads still coming and its journal flush pending.
	killAfter = 2
	// loadWorkers phones upload at once, and checkWorkers check.
	loadWorkers  = 4
	checkWorkers = 2
)

// replicaArgs returns the flags of a replica of the deployment whose data
// directory is data. With peer, it obtains the store's key-encryption key
// from that replica.
func replicaArgs(data, policyPath, storeURL, peer string, more ...string) []string {
	a := []string{"--listen", "127.0.0.1:0", "--data", data, "--policy", policyPath, "--store", storeURL}
	if peer != "" {
		a = append(a, "--peer", peer)
	}
	return append(a, more...)
}

// newMachine returns the data directory of a replica on a new machine: a
// directory of its own, so a sealing key of its own (the simulated TEE's
// platform key is kept there), which does not open the store's
// key-encryption key.
func newMachine(t *testing.T) string { return filepath.Join(t.TempDir(), "data") }

// waitLog waits until p's log holds line, which p may still be writing:
// its output reaches the test through a pipe.
func waitLog(t *testing.T, p *process, line string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.log.String(), line) {
		if time.Now().After(deadline) {
			t.Errorf("%s did not log %s", p.name, line)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReplicas runs three replicas over one PostgreSQL database under a
// bounded load of uploads and checks, kills one with SIGKILL while
// uploads are in flight, starts it again, and requires: the replicas that
// joined, and the one started again, obtained the key-encryption key from
// a peer; every upload a poll acknowledged as durable matches on every
// replica; every phone gets the same answer from every replica.
func TestReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three conftraced processes over PostgreSQL under load")
	}
	storeURL := pgtest.URL(t)
	bin := buildConftraced(t)
	lab, err := authority.GenerateKey("lab")
	if err != nil {
		t.Fatal(err)
	}
	pol := testPolicy(lab)
	policyPath, _ := writePolicy(t, pol)

	first := start(t, "replica 1", bin, replicaArgs(newMachine(t), policyPath, storeURL, "")...)
	reps := []*process{first,
		start(t, "replica 2", bin, replicaArgs(newMachine(t), policyPath, storeURL, first.url())...),
		start(t, "replica 3", bin, replicaArgs(newMachine(t), policyPath, storeURL, first.url())...),
	}
	for _, r := range reps[1:] {
		waitLog(t, r, msgObtainedKEK)
	}
	if strings.Contains(first.log.String(), msgObtainedKEK) {
		t.Errorf("replica 1, the first over an empty store, obtained a key from a peer")
	}
	cl := &cluster{clients: make([]*client.Client, len(reps))}
	for i, r := range reps {
		c, err := newClient(t.Context(), r.url(), bin.measurement)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		cl.set(i, c)
	}

	pos, con := newDevices(t, positives), newDevices(t, contacts)
	meet(t, con[:exposed], pos)
	meet(t, con[exposed:], con[:contacts-exposed])

	// Replica 3 is killed: not replica 1, the peer every replica names.
	const victim = 2
	ph := &phones{cl: cl, pol: pol, lab: lab}
	restarted := killMidLoad(t, ph, pos, con, reps, victim, func(t *testing.T) *process {
		// Started again on a replaced machine, as after a hardware
		// failure: a fresh data directory, so its own sealing key cannot
		// open the store's key, which it must obtain from a live replica.
		return start(t, "replica 3, started again", bin, replicaArgs(newMachine(t), policyPath, storeURL, first.url())...)
	}, bin.measurement)
	waitLog(t, restarted, msgObtainedKEK)
	reps[victim] = restarted

	began := time.Now()
	for i, r := range reps {
		c := cl.live(i)
		for k, d := range pos {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			err := awaitUploaded(ctx, c, d)
			cancel()
			if err != nil {
				t.Fatalf("%s lost the acknowledged upload of positive %d: %v", r.name, k, err)
			}
		}
	}
	t.Logf("every replica says every upload is durable %s after the load", time.Since(began).Round(time.Millisecond))
	compareAnswers(t, cl, reps, con, pol)
}

// killMidLoad runs the load: every positive phone uploads until a poll
// acknowledges it, and every contact checks once, while the victim is
// killed with SIGKILL once it has answered killAfter uploads, and started
// again by restart. It returns the replica started again.
func killMidLoad(t *testing.T, ph *phones, pos, con []*device.Device, reps []*process, victim int, restart func(*testing.T) *process, measurement []byte) *process {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	victimClient := ph.cl.live(victim)
	kill := make(chan struct{})
	var mu sync.Mutex
	var answered int
	ph.tookUpload = func(c *client.Client) {
		mu.Lock()
		defer mu.Unlock()
		if c == victimClient {
			if answered++; answered == killAfter {
				close(kill)
			}
		}
	}
	outcomes := make([]uploadOutcome, len(pos))
	errs := make([]error, len(pos)+len(con))
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range loadWorkers {
		wg.Go(func() {
			for i := range jobs {
				outcomes[i], errs[i] = ph.uploadPositive(ctx, pos[i], i%len(reps))
			}
		})
	}
	checks := make(chan int)
	for range checkWorkers {
		wg.Go(func() {
			for j := range checks {
				_, errs[len(pos)+j] = ph.check(ctx, con[j], j%len(reps))
			}
		})
	}
	done := make(chan struct{})
	go func() {
		for k := range max(len(pos), len(con)) {
			if k < len(pos) {
				jobs <- k
			}
			if k < len(con) {
				checks <- k
			}
		}
		close(jobs)
		close(checks)
		wg.Wait()
		close(done)
	}()

	var restarted *process
	select {
	case <-kill:
		ph.cl.set(victim, nil)
		reps[victim].kill(t)
		t.Logf("%s killed after answering %d uploads", reps[victim].name, killAfter)
		restarted = restart(t)
		c, err := newClient(ctx, restarted.url(), measurement)
		if err != nil {
			t.Fatalf("%s: %v", restarted.name, err)
		}
		ph.cl.set(victim, c)
	case <-done:
		t.Fatalf("the load ended before %s answered %d uploads", reps[victim].name, killAfter)
	}
	<-done
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("the load: %v", err)
	}
	reportOutcomes(t, outcomes, victimClient)
	return restarted
}

// reportOutcomes logs how many uploads were answered, lost and made
// again, so that a run shows the kill came in the middle of uploads.
func reportOutcomes(t *testing.T, outcomes []uploadOutcome, victim *client.Client) {
	t.Helper()
	var uploads, lost, byVictim int
	for _, o := range outcomes {
		uploads += o.uploads
		lost += o.lost
		if o.by == victim {
			byVictim++
		}
	}
	t.Logf("%d positive phones acknowledged after %d uploads answered, %d of them lost by the killed replica and made again; %d acknowledged by the killed replica before it died",
		len(outcomes), uploads, lost, byVictim)
}

// compareAnswers has every contact check its exposure at every replica,
// and requires the same answer from all, exposed for the contacts of
// positive phones, not exposed for the others.
func compareAnswers(t *testing.T, cl *cluster, reps []*process, con []*device.Device, pol policy.Policy) {
	t.Helper()
	for j, d := range con {
		var answers []api.ExposureResponse
		for i, r := range reps {
			c := cl.live(i)
			a, err := c.CheckExposure(t.Context(), d.Report(pol, time.Now()))
			if err != nil {
				t.Fatalf("contact %d at %s: %v", j, r.name, err)
			}
			answers = append(answers, a)
		}
		if want := j < exposed; answers[0].Exposed != want {
			t.Errorf("contact %d: exposed %t at %s, want %t", j, answers[0].Exposed, reps[0].name, want)
		}
		for i := range answers[1:] {
			if !reflect.DeepEqual(answers[0], answers[i+1]) {
				t.Errorf("contact %d: %s answers %s, %s answers %s", j, reps[0].name, fmtAnswer(answers[0]), reps[i+1].name, fmtAnswer(answers[i+1]))
			}
		}
	}
}

func fmtAnswer(a api.ExposureResponse) string {
	s := fmt.Sprintf("exposed=%t last=%q", a.Exposed, a.LastExposure)
	for _, d := range a.Days {
		if d.Minutes > 0 {
			s += fmt.Sprintf(" [%s %d min, %d weighted]", d.Date, d.Minutes, d.WeightedMinutes)
		}
	}
	return s
}
