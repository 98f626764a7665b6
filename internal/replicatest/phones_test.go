package replicatest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/attest"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/client"
	"github.com/conftrace/conftrace/device"
	"github.com/conftrace/conftrace/policy"
)

// retryEvery is how long a phone waits before it asks again: for a
// result not followed yet, an upload not durable yet, a replica down.
const retryEvery = 100 * time.Millisecond

// testPolicy returns the policy of the tests' deployments: the default
// one, with lab as its one authority, journal flushes every second (so
// that uploads are acknowledged within seconds), answers released at once
// (on loopback their timing tells nothing) and detailed, so that replicas
// are compared on every figure of an answer, not only on exposed or not.
func testPolicy(lab *authority.Key) policy.Policy {
	p := policy.Default()
	p.Authorities = []policy.Authority{{Name: lab.Name, PublicKey: lab.PublicKey()}}
	p.StoreFlushSeconds = 1
	p.AnswerReleaseMillis = 0
	p.Answers = policy.AnswersDetailed
	return p
}

// writePolicy writes p's canonical form and returns its path and SHA-256.
func writePolicy(t *testing.T, p policy.Policy) (string, [sha256.Size]byte) {
	t.Helper()
	doc, err := p.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, sha256.Sum256(doc)
}

// newClient returns a phone's client of the replica at url, which must
// attest the simulated TEE running measurement.
func newClient(ctx context.Context, url string, measurement []byte) (*client.Client, error) {
	return client.New(ctx, client.Config{
		Server:       url,
		Expectations: attest.Expectations{AllowSimulated: true, Measurements: [][]byte{measurement}},
		HTTPClient:   &http.Client{Timeout: 30 * time.Second},
	})
}

// newDevices makes n phones.
func newDevices(t *testing.T, n int) []*device.Device {
	t.Helper()
	ds := make([]*device.Device, n)
	for i := range ds {
		d, err := device.Create(t.Context(), filepath.Join(t.TempDir(), fmt.Sprint(i)), device.Config{AnyCode: true, AllowSimulated: true})
		if err != nil {
			t.Fatal(err)
		}
		ds[i] = d
	}
	return ds
}

// meet makes each contacts[j] meet others[j % len(others)] for 20 minutes
// at close range, two days ago (at hour j, so that no two encounters
// overlap): enough to be exposed if that phone uploads.
func meet(t *testing.T, contacts, others []*device.Device) {
	t.Helper()
	twoDaysAgo := time.Now().Add(-48 * time.Hour).Truncate(24 * time.Hour)
	for j, c := range contacts {
		at := twoDaysAgo.Add(time.Duration(j%24) * time.Hour)
		if _, err := device.Meet(t.Context(), c, others[j%len(others)], at, 20*time.Minute, 50, 52); err != nil {
			t.Fatal(err)
		}
	}
}

// cluster is the replicas as phones reach them: a client per replica, nil
// while the replica is down. A replica started again is a new enclave:
// it gets a new client, which phones tell from the old one.
type cluster struct {
	mu      sync.Mutex
	clients []*client.Client
}

// set makes c the client of replica i; nil marks it down.
func (cl *cluster) set(i int, c *client.Client) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.clients[i] = c
}

// live returns the client of replica home if it is up, or else of the
// next one up; nil if none is.
func (cl *cluster) live(home int) *client.Client {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for k := range cl.clients {
		if c := cl.clients[(home+k)%len(cl.clients)]; c != nil {
			return c
		}
	}
	return nil
}

// up reports whether c is the client of a replica that is up.
func (cl *cluster) up(c *client.Client) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, x := range cl.clients {
		if x == c {
			return true
		}
	}
	return false
}

// uploadOutcome is what happened to one positive phone's upload.
type uploadOutcome struct {
	// uploads counts the uploads a replica answered; lost counts those a
	// later poll showed were lost (the authorization handed out again).
	uploads, lost int
	// by is the client of the replica that took the acknowledged upload.
	by *client.Client
}

// phones is the load: positive phones that upload, and the lab.
type phones struct {
	cl  *cluster
	pol policy.Policy
	lab *authority.Key
	// tookUpload is called with the client of each replica that answered
	// an upload.
	tookUpload func(*client.Client)
}

// uploadPositive plays positive phone d, whose replica is home (another
// if home is down): the lab's positive result, polls for the
// authorization, the upload, and polls until a poll says the upload is
// durable (acknowledged). An upload a replica answered and then lost
// (killed before its journal flush) shows as the authorization handed
// out again: the phone uploads again, as the app does.
//
// Only a poll of the replica that took the upload is accurate before the
// upload's flush has been followed (docs/replicas.md: another replica
// would hand out the authorization again). So while that replica is up
// the phone polls it; once it is down, the phone waits a flush period
// (for a flush that held rows back) and a second (more than a follow
// period) past the answer's DurableBy before it asks another.
func (ph *phones) uploadPositive(ctx context.Context, d *device.Device, home int) (uploadOutcome, error) {
	var out uploadOutcome
	now := time.Now()
	code, err := d.RegisterTest(now)
	if err != nil {
		return out, err
	}
	res, err := ph.lab.SignResult(code, api.Positive, now.Add(-24*time.Hour), time.Time{}, now)
	if err != nil {
		return out, err
	}
	if err := ph.submit(ctx, res, home); err != nil {
		return out, err
	}
	tst, err := d.Test()
	if err != nil {
		return out, err
	}
	var took *client.Client
	var askOthersAt time.Time
	var lastErr error
	for {
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("not acknowledged (last error: %v): %w", lastErr, err)
		}
		c := took
		if took == nil || !ph.cl.up(took) {
			if took != nil && time.Now().Before(askOthersAt) {
				sleepCtx(ctx, retryEvery)
				continue
			}
			if c = ph.cl.live(home); c == nil {
				sleepCtx(ctx, retryEvery)
				continue
			}
		}
		pr, err := c.PollResult(ctx, tst.Secret)
		if refusal(err) {
			return out, fmt.Errorf("poll: %w", err)
		}
		if err != nil {
			lastErr = err
			sleepCtx(ctx, retryEvery)
			continue
		}
		switch {
		case pr.Uploaded:
			out.by = took
			return out, nil
		case pr.Result == api.Pending || pr.UploadPending:
			sleepCtx(ctx, retryEvery)
		case pr.Result == api.Positive && pr.UploadAuthorization != nil:
			if took != nil {
				out.lost++
			}
			up, err := c.Upload(ctx, pr.UploadAuthorization, d.Report(ph.pol, time.Now()))
			if refusal(err) {
				return out, fmt.Errorf("upload: %w", err)
			}
			if err != nil {
				lastErr = err
				sleepCtx(ctx, retryEvery)
				continue
			}
			out.uploads++
			took = c
			grace := time.Duration(ph.pol.StoreFlushSeconds)*time.Second + time.Second
			askOthersAt = time.Unix(up.DurableBy, 0).Add(grace)
			ph.tookUpload(c)
		default:
			return out, fmt.Errorf("unexpected poll answer %+v", pr)
		}
	}
}

// submit has the lab submit res to replica home, or another if home is
// down. A result stored by a replica that died before answering is
// refused as replayed by the next: it is stored.
func (ph *phones) submit(ctx context.Context, res api.SignedResult, home int) error {
	for {
		c := ph.cl.live(home)
		if c == nil {
			if err := sleepCtx(ctx, retryEvery); err != nil {
				return err
			}
			continue
		}
		err := c.SubmitResult(ctx, res)
		if err == nil || errors.Is(err, &api.Error{Code: api.CodeReplayed}) {
			return nil
		}
		if refusal(err) {
			return fmt.Errorf("submitting the result: %w", err)
		}
		if err := sleepCtx(ctx, retryEvery); err != nil {
			return fmt.Errorf("submitting the result: %w", err)
		}
	}
}

// check has d check its exposure at replica home, or another if home is
// down, until one answers.
func (ph *phones) check(ctx context.Context, d *device.Device, home int) (api.ExposureResponse, error) {
	for {
		if c := ph.cl.live(home); c != nil {
			r, err := c.CheckExposure(ctx, d.Report(ph.pol, time.Now()))
			if err == nil || refusal(err) {
				return r, err
			}
		}
		if err := sleepCtx(ctx, retryEvery); err != nil {
			return api.ExposureResponse{}, fmt.Errorf("checking exposure: %w", err)
		}
	}
}

// awaitUploaded polls d's result at c until it says the upload is durable.
func awaitUploaded(ctx context.Context, c *client.Client, d *device.Device) error {
	tst, err := d.Test()
	if err != nil {
		return err
	}
	var last api.PollResultResponse
	var lastErr error
	for {
		last, lastErr = c.PollResult(ctx, tst.Secret)
		if lastErr == nil && last.Uploaded {
			return nil
		}
		if err := sleepCtx(ctx, retryEvery); err != nil {
			return fmt.Errorf("the poll never said uploaded: last answer %+v, error %v: %w", last, lastErr, err)
		}
	}
}

// refusal reports whether err is a replica's refusal of a request, which
// asking again would not change; other errors (a replica down, or killed
// while it answered) are worth another try.
func refusal(err error) bool {
	var e *api.Error
	return errors.As(err, &e)
}

// sleepCtx waits for d, or until ctx ends, and returns ctx's error.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
