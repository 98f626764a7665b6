package replicatest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/internal/store/postgres/pgtest"
	"github.com/jackc/pgx/v5"
)

// storeCopy is a copy of a PostgreSQL store that the host took, as a
// backup would: every record (internal/store/postgres/schema.go keeps
// them in one table) and the sequence that numbers them.
type storeCopy struct {
	url      string
	lastSeq  int64
	isCalled bool
}

// copyTable holds the copy, in the store's own schema.
const copyTable = "replicatest_copy"

// connect connects to the store at url.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatalf("connecting to the store: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// copyStore copies the store at url. Replicas may be writing: the copy
// is of the records committed when it starts, and the sequence is read
// after it, so it is above every number the copy holds.
func copyStore(t *testing.T, url string) *storeCopy {
	t.Helper()
	ctx := t.Context()
	conn := connect(t, url)
	c := &storeCopy{url: url}
	if _, err := conn.Exec(ctx, `CREATE TABLE `+copyTable+` AS SELECT * FROM conftrace_records`); err != nil {
		t.Fatalf("copying the store: %v", err)
	}
	if err := conn.QueryRow(ctx, `SELECT last_value, is_called FROM conftrace_seq`).Scan(&c.lastSeq, &c.isCalled); err != nil {
		t.Fatalf("copying the store's sequence: %v", err)
	}
	return c
}

// restore puts the copy back in place of the store, in one transaction.
func (c *storeCopy) restore(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	conn := connect(t, c.url)
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `TRUNCATE conftrace_records`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO conftrace_records SELECT * FROM `+copyTable); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT setval('conftrace_seq', $1, $2)`, c.lastSeq, c.isCalled)
		return err
	})
	if err != nil {
		t.Fatalf("restoring the copy: %v", err)
	}
}

// TestRestoredCopyRefused: the host copies the store, replicas go on
// writing (uploads are acknowledged), and the host puts the copy back and
// restarts a replica on it, which must refuse it: a live replica
// confirmed writes the copy lacks. Without the restore, the same restart
// must succeed.
func TestRestoredCopyRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs conftraced processes over PostgreSQL")
	}
	// To enable once rollback detection is done: remove this line.
	storeURL := pgtest.URL(t)
	bin := buildConftraced(t)
	lab, err := authority.GenerateKey("lab")
	if err != nil {
		t.Fatal(err)
	}
	pol := testPolicy(lab)
	policyPath, _ := writePolicy(t, pol)
	first := start(t, "replica 1", bin, replicaArgs(newMachine(t), policyPath, storeURL, "")...)
	data := newMachine(t)
	second := start(t, "replica 2", bin, replicaArgs(data, policyPath, storeURL, first.url())...)
	waitLog(t, second, msgObtainedKEK)

	old := copyStore(t, storeURL)
	// Two positive phones upload through replica 1, one after the other,
	// each until acknowledged: two journal flushes of replica 1 that the
	// copy lacks (and two used upload authorizations it would revive).
	c, err := newClient(t.Context(), first.url(), bin.measurement)
	if err != nil {
		t.Fatal(err)
	}
	ph := &phones{cl: &cluster{clients: []*client.Client{c}}, pol: pol, lab: lab, tookUpload: func(*client.Client) {}}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	pos := newDevices(t, 2)
	meet(t, newDevices(t, 2), pos)
	for i, d := range pos {
		if _, err := ph.uploadPositive(ctx, d, 0); err != nil {
			t.Fatalf("positive %d: %v", i, err)
		}
	}

	// The same machine restarts replica 2 on the store as it is.
	second.stop(t)
	again := start(t, "replica 2, restarted", bin, replicaArgs(data, policyPath, storeURL, first.url())...)
	waitLog(t, again, msgObtainedKEK)
	again.stop(t)

	old.restore(t)
	// The host takes its time: replica 1 goes on writing over the copy,
	// a flush or two. The copy still lacks what it acknowledged.
	time.Sleep(2 * time.Duration(pol.StoreFlushSeconds) * time.Second)
	out := refused(t, "replica 2, restarted on the restored copy", bin, replicaArgs(data, policyPath, storeURL, first.url())...)
	if !strings.Contains(out, "rolled back") {
		t.Errorf("replica 2 on the restored copy refused to start, but not as rolled back:\n%s", out)
	}
}
