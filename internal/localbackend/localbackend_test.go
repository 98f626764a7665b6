package localbackend_test

import (
	"errors"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/internal/localbackend"
)

// A local backend is attested, answers through the SDK, keeps its sealed
// state across a restart in the same directory, and times its requests.
func TestStartRestart(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	b, err := localbackend.Start(t.Context(), localbackend.Config{Dir: dir, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return now }
	c, err := client.New(t.Context(), client.Config{Server: b.URL, Expectations: b.Expectations(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	code := api.TestCode(make([]byte, 32))
	res, err := b.Authority.SignResult(code, api.Positive, now.Add(-time.Hour), time.Time{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SubmitResult(t.Context(), res); err != nil {
		t.Fatalf("SubmitResult: %v", err)
	}
	if n := len(b.Latencies()); n < 2 {
		t.Errorf("%d requests timed, want at least the bundle and the result", n)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// The same directory and authority: the same sealing key, so the
	// stored result is still there (submitting it again is a replay).
	b2, err := localbackend.Start(t.Context(), localbackend.Config{Dir: dir, Authority: b.Authority, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	c2, err := client.New(t.Context(), client.Config{Server: b2.URL, Expectations: b2.Expectations(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	var apiErr *api.Error
	if err := c2.SubmitResult(t.Context(), res); !errors.As(err, &apiErr) || apiErr.Code != api.CodeReplayed {
		t.Fatalf("the same signed result after a restart: %v, want %q", err, api.CodeReplayed)
	}
}

func TestStartNeedsDir(t *testing.T) {
	if _, err := localbackend.Start(t.Context(), localbackend.Config{}); err == nil {
		t.Fatal("Start without a directory succeeded")
	}
}
