package service_test

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/device"
)

// storeFiles returns the content of every file of the backend's data
// directory: the database, its write-ahead log and shared memory.
func storeFiles(t *testing.T, w *world) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	dir := filepath.Dir(w.dbPath())
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		files[filepath.Base(p)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// storeShape returns what the host sees of the store's records without
// opening them: per table and day, how many, and how many bytes of keys
// and of values.
func storeShape(t *testing.T, w *world) map[string][3]int {
	t.Helper()
	db, err := sql.Open("sqlite", w.dbPath())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT tbl, day, count(*), sum(length(key)), sum(length(value)) FROM records GROUP BY tbl, day`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	shape := map[string][3]int{}
	for rows.Next() {
		var tbl string
		var day int64
		var n [3]int
		if err := rows.Scan(&tbl, &day, &n[0], &n[1], &n[2]); err != nil {
			t.Fatal(err)
		}
		shape[fmt.Sprintf("%s/%d", tbl, day)] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return shape
}

// shapeDiff returns what changed from before to after, per table and day.
func shapeDiff(before, after map[string][3]int) map[string][3]int {
	d := map[string][3]int{}
	for _, k := range slices.Concat(slices.Collect(maps.Keys(before)), slices.Collect(maps.Keys(after))) {
		b, a := before[k], after[k]
		if a != b {
			d[k] = [3]int{a[0] - b[0], a[1] - b[1], a[2] - b[2]}
		}
	}
	return d
}

// An infected phone's exchange, which polls its positive result and
// uploads, writes nothing to the store, and neither do the other phones'
// exchanges: the store's files are the same bytes before and after. The
// upload is written by the journal's next flush, on the clock, and that
// flush writes exactly what a flush with nothing to write does: the same
// number of rows, of the same sizes, in the same table and day.
func TestExchangeWritesNothing(t *testing.T) {
	ctx := context.Background()
	// At noon, so that the flushes fall on the day of the others.
	w := newWorldAt(t, nil, time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	c := w.client()
	a, x := w.device("a"), w.device("x")
	met := w.now.Add(-26 * time.Hour).Truncate(time.Hour)
	if _, err := device.Meet(ctx, a, x, met, 20*time.Minute, 50, 50); err != nil {
		t.Fatal(err)
	}
	code, _ := x.RegisterTest(w.now)
	tst, _ := x.Test()
	res, _ := w.lab.SignResult(code, api.Positive, w.now.Add(-24*time.Hour), time.Time{}, w.now)
	if err := c.SubmitResult(ctx, res); err != nil {
		t.Fatal(err)
	}

	// A flush with nothing to write, for its shape.
	before := storeShape(t, w)
	w.flush(w.now.Add(w.flushPeriod()).Unix())
	empty := shapeDiff(before, storeShape(t, w))
	if len(empty) != 1 {
		t.Fatalf("a flush changed %v; want rows added to one table in one day", empty)
	}
	for k, n := range empty {
		if n[0] != w.pol.StoreFlushRows {
			t.Fatalf("a flush added %d rows to %s, want %d", n[0], k, w.pol.StoreFlushRows)
		}
	}

	files := storeFiles(t, w)
	exchange := func(name string, d client.Daily) api.ExchangeResponse {
		t.Helper()
		w.now = w.now.Add(time.Second)
		r, err := c.Exchange(ctx, d)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return r
	}
	r := exchange("x's poll and upload", client.Daily{Report: w.window(x), Secret: tst.Secret, Upload: true})
	if r.Upload == nil || r.UploadError != nil || r.Result == nil || !r.Result.UploadPending {
		t.Fatalf("x's poll and upload: %+v, %+v; want the upload taken, pending", r, r.Result)
	}
	if ra := exchange("a's check", client.Daily{Report: w.window(a)}); !ra.Exposure.Exposed {
		t.Fatalf("a's check: %+v, want exposed at once", ra)
	}
	if rx := exchange("x's poll", client.Daily{Report: w.window(x), Secret: tst.Secret}); !rx.Result.UploadPending {
		t.Fatalf("x's poll: %+v, want the upload pending", rx.Result)
	}
	after := storeFiles(t, w)
	for _, name := range slices.Sorted(maps.Keys(after)) {
		if b, ok := files[name]; !ok || string(b) != string(after[name]) {
			t.Errorf("the exchanges wrote to %s", name)
		}
	}
	if len(after) != len(files) {
		t.Errorf("the exchanges changed the store's files from %v to %v", slices.Sorted(maps.Keys(files)), slices.Sorted(maps.Keys(after)))
	}

	before = storeShape(t, w)
	w.flush(r.Upload.DurableBy)
	if written := shapeDiff(before, storeShape(t, w)); !maps.Equal(written, empty) {
		t.Errorf("the flush that wrote the upload changed %v; a flush with nothing to write changed %v", written, empty)
	}
	if rx := exchange("x's poll after the flush", client.Daily{Report: w.window(x), Secret: tst.Secret}); !rx.Result.Uploaded {
		t.Fatalf("x's poll after the flush: %+v, want uploaded", rx.Result)
	}
}
