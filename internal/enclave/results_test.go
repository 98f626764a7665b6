package enclave

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/conftrace/conftrace/api"
	"github.com/conftrace/conftrace/authority"
	"github.com/conftrace/conftrace/policy"
)

func TestOpenRefusesBadConfig(t *testing.T) {
	v := newEnv(t)
	cfg := v.config()
	cfg.Store = nil
	if _, err := Open(context.Background(), cfg); err == nil {
		t.Error("Open without a store succeeded")
	}
	cfg = v.config()
	cfg.Policy.RetentionDays = 0
	if _, err := Open(context.Background(), cfg); err == nil {
		t.Error("Open with an invalid policy succeeded")
	}
}

// TestSubmitResultRefusals: only a fresh, well-formed statement that an
// authority of the policy signed is stored; every refused one leaves the
// test pending.
func TestSubmitResultRefusals(t *testing.T) {
	v := newEnv(t)
	ctx := context.Background()
	secret := newSecret()
	now := v.now()
	good := v.signResult(secret, api.Positive)

	stranger, err := authority.GenerateKey("lab-9") // not in the policy
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := authority.GenerateKey("lab-1") // the policy's name, another key
	if err != nil {
		t.Fatal(err)
	}
	sign := func(k *authority.Key) api.SignedResult {
		r, err := k.SignResult(api.TestCode(secret), api.Positive, now.Add(-24*time.Hour), time.Time{}, now)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// changed returns good with f applied; resigned, the lab signed the
	// change, so only the enclave's own rules can refuse it.
	changed := func(resigned bool, f func(*api.SignedResult)) api.SignedResult {
		r := good
		r.Nonce = bytes.Clone(good.Nonce)
		f(&r)
		if resigned {
			v.resign(&r)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		r    api.SignedResult
		code string
	}{
		{"authority not in the policy", sign(stranger), api.CodeUnknownAuthority},
		{"signed by another key under the policy's name", sign(impostor), api.CodeBadSignature},
		{"unsigned", changed(false, func(r *api.SignedResult) { r.Signature = nil }), api.CodeBadSignature},
		{"result changed after signing", changed(false, func(r *api.SignedResult) { r.Result = api.Negative }), api.CodeBadSignature},
		{"code changed after signing", changed(false, func(r *api.SignedResult) { r.TestCode = api.TestCode(newSecret()) }), api.CodeBadSignature},
		{"issued_at changed after signing", changed(false, func(r *api.SignedResult) { r.IssuedAt++ }), api.CodeBadSignature},
		{"short nonce", changed(true, func(r *api.SignedResult) { r.Nonce = r.Nonce[:15] }), api.CodeMalformed},
		{"signed more than 7 days ago", changed(true, func(r *api.SignedResult) { r.IssuedAt = now.Add(-maxResultAge - time.Minute).Unix() }), api.CodeExpired},
		{"signed in the future", changed(true, func(r *api.SignedResult) { r.IssuedAt = now.Add(maxAhead + time.Minute).Unix() }), api.CodeFutureDated},
		{"code not canonical", changed(true, func(r *api.SignedResult) { r.TestCode = "abcd-efgh-jkmn-pqrs1" }), api.CodeMalformed},
		{"code not a code", changed(true, func(r *api.SignedResult) { r.TestCode = "ABCDE-FGHIJ" }), api.CodeMalformed},
		{"code mistyped", changed(true, func(r *api.SignedResult) { r.TestCode = "ABCD-EFGH-JKMN-PQRS2" }), api.CodeMalformed},
		{"result pending", changed(true, func(r *api.SignedResult) { r.Result = api.Pending }), api.CodeMalformed},
		{"result unknown", changed(true, func(r *api.SignedResult) { r.Result = "maybe" }), api.CodeMalformed},
		{"test date tomorrow", changed(true, func(r *api.SignedResult) { r.TestDate = now.Add(24 * time.Hour).Format(api.DateLayout) }), api.CodeMalformed},
		{"test date not a date", changed(true, func(r *api.SignedResult) { r.TestDate = "10/03/2026" }), api.CodeMalformed},
		{"symptom onset tomorrow", changed(true, func(r *api.SignedResult) { r.SymptomOnset = now.Add(24 * time.Hour).Format(api.DateLayout) }), api.CodeMalformed},
		{"symptom onset not a date", changed(true, func(r *api.SignedResult) { r.SymptomOnset = "yesterday" }), api.CodeMalformed},
	} {
		_, err := v.e.SubmitResult(ctx, tc.r)
		wantCode(t, tc.name, err, tc.code)
	}
	if pr, err := v.poll(secret); err != nil || pr.Result != api.Pending {
		t.Fatalf("after refused statements: %+v, %v; want pending", pr, err)
	}
	if len(v.records(tableResults)) != 0 {
		t.Fatal("a refused statement left a result record")
	}

	// The edges of freshness are accepted: signed just under 7 days ago,
	// or up to 5 minutes ahead of the enclave's clock.
	for _, issued := range []time.Time{now.Add(-maxResultAge + time.Minute), now.Add(maxAhead)} {
		r, err := v.lab.SignResult(api.TestCode(newSecret()), api.Negative, now.Add(-8*24*time.Hour), time.Time{}, issued)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.e.SubmitResult(ctx, r); err != nil {
			t.Errorf("statement signed at now%+v: %v", issued.Sub(now), err)
		}
	}
	// Today's test date and symptom onset are not in the future.
	r, err := v.lab.SignResult(api.TestCode(secret), api.Positive, now, now, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.e.SubmitResult(ctx, r); err != nil {
		t.Fatalf("result tested today: %v", err)
	}
}

// TestSubmitResultReplay: a code takes one result. The same statement
// again, or a later one for the same code, is refused, and the first
// result stands.
func TestSubmitResultReplay(t *testing.T) {
	v := newEnv(t)
	ctx := context.Background()
	secret := newSecret()
	first := v.signResult(secret, api.Negative)
	if r, err := v.e.SubmitResult(ctx, first); err != nil || !r.Stored {
		t.Fatalf("first statement: %+v, %v", r, err)
	}
	_, err := v.e.SubmitResult(ctx, first)
	wantCode(t, "the same statement again", err, api.CodeReplayed)

	v.clock.Advance(time.Hour)
	_, err = v.e.SubmitResult(ctx, v.signResult(secret, api.Positive))
	wantCode(t, "a positive result for a code already declared negative", err, api.CodeReplayed)
	v.restart()
	_, err = v.e.SubmitResult(ctx, first)
	wantCode(t, "the same statement after a restart", err, api.CodeReplayed)

	if pr, err := v.poll(secret); err != nil || pr.Result != api.Negative || pr.UploadAuthorization != nil {
		t.Fatalf("poll: %+v, %v; want the first result, negative, and no authorization", pr, err)
	}
}

// TestPollResult walks a test through pending, positive, authorized,
// uploaded; and a negative one, which never yields an authorization.
func TestPollResult(t *testing.T) {
	v := newEnv(t)
	secret, negative := newSecret(), newSecret()

	if pr, err := v.poll(secret); err != nil || pr.Result != api.Pending || pr.UploadAuthorization != nil {
		t.Fatalf("before any result: %+v, %v; want pending", pr, err)
	}
	before := v.snapshot()
	v.poll(secret)
	if !sameRecords(before, v.snapshot()) {
		t.Error("a pending poll wrote to the store")
	}
	for _, bad := range [][]byte{nil, make([]byte, api.TestSecretSize-1), make([]byte, api.TestSecretSize+1)} {
		_, err := v.poll(bad)
		wantCode(t, "secret of the wrong size", err, api.CodeMalformed)
	}

	v.submit(negative, api.Negative)
	if pr, err := v.poll(negative); err != nil || pr.Result != api.Negative || pr.UploadAuthorization != nil {
		t.Fatalf("negative: %+v, %v; want negative and no authorization", pr, err)
	}

	v.submit(secret, api.Positive)
	// Knowing the code is not knowing the secret: another secret polls
	// its own (pending) test.
	if pr, err := v.poll(newSecret()); err != nil || pr.Result != api.Pending {
		t.Fatalf("another secret: %+v, %v; want pending", pr, err)
	}
	pr, err := v.poll(secret)
	if err != nil || pr.Result != api.Positive || len(pr.UploadAuthorization) != 32 {
		t.Fatalf("positive: %+v, %v; want a 32-byte authorization", pr, err)
	}
	if want := v.now().Add(2 * v.pol.UploadAuthorizationTTL()).Unix(); pr.ExpiresAt != want {
		t.Errorf("authorization expires at %d, want the end of the period after the submission's, %d", pr.ExpiresAt, want)
	}
	v.clock.Advance(time.Hour)
	again, err := v.poll(secret)
	if err != nil || !bytes.Equal(again.UploadAuthorization, pr.UploadAuthorization) || again.ExpiresAt != pr.ExpiresAt {
		t.Fatalf("second poll: %+v, %v; want the same authorization and expiry", again, err)
	}
	v.restart()
	if again, err := v.poll(secret); err != nil || !bytes.Equal(again.UploadAuthorization, pr.UploadAuthorization) {
		t.Fatalf("poll after a restart: %+v, %v; want the same authorization", again, err)
	}

	inf, _ := encounter(v.now().Add(-time.Hour), 5, 50)
	if _, err := v.upload(pr.UploadAuthorization, inf); err != nil {
		t.Fatal(err)
	}
	pending, err := v.poll(secret)
	if err != nil || pending.Result != api.Positive || !pending.UploadPending || pending.Uploaded || pending.UploadAuthorization != nil {
		t.Fatalf("poll after the upload: %+v, %v; want it pending and no authorization", pending, err)
	}
	v.flushAll()
	after, err := v.poll(secret)
	if err != nil || after.Result != api.Positive || !after.Uploaded || after.UploadPending || after.UploadAuthorization != nil {
		t.Fatalf("poll after the upload was written: %+v, %v; want uploaded and no authorization", after, err)
	}
}

// TestPollAfterAuthorizationExpired: once the authorization has expired
// unused, the poll hands out another, valid one, never the expired one.
func TestPollAfterAuthorizationExpired(t *testing.T) {
	v := newEnv(t)
	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil {
		t.Fatal(err)
	}
	v.clock.Advance(time.Duration(pr.ExpiresAt-v.now().Unix()) * time.Second)
	late, err := v.poll(secret)
	if err != nil || late.Result != api.Positive || len(late.UploadAuthorization) == 0 || bytes.Equal(late.UploadAuthorization, pr.UploadAuthorization) || late.ExpiresAt <= v.now().Unix() {
		t.Fatalf("poll at expiry: %+v, %v; want positive and a new, valid authorization", late, err)
	}
}

// TestPollWipesSecret: the secret a device sends is not left in the
// request once answered.
func TestPollWipesSecret(t *testing.T) {
	v := newEnv(t)
	secret := newSecret()
	req := api.PollResultRequest{Secret: bytes.Clone(secret)}
	if _, err := v.e.PollResult(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(req.Secret, make([]byte, len(secret))) {
		t.Error("PollResult left the secret in the request")
	}
}

// TestResultsPolicyAuthorizationTTL: the authorization's lifetime is the
// policy's, not a constant.
func TestResultsPolicyAuthorizationTTL(t *testing.T) {
	v := newEnv(t, func(p *policy.Policy) { p.UploadAuthorizationSeconds = 600 })
	secret := newSecret()
	v.submit(secret, api.Positive)
	pr, err := v.poll(secret)
	if err != nil || pr.ExpiresAt != v.now().Unix()+1200 {
		t.Fatalf("poll: %+v, %v; want expiry at the end of the next 600 s period", pr, err)
	}
}

// Result records do not tell what they say by their size: positive and
// negative, with or without a symptom onset, they are sealed at one length
// under keys of one length, and polling them changes nothing stored.
func TestResultRecordsOneSize(t *testing.T) {
	v := newEnv(t)
	now := v.now()
	for _, c := range []struct {
		result api.Result
		onset  time.Time
	}{{api.Positive, time.Time{}}, {api.Negative, time.Time{}}, {api.Positive, now.Add(-72 * time.Hour)}, {api.Negative, now.Add(-72 * time.Hour)}} {
		secret := newSecret()
		r, err := v.lab.SignResult(api.TestCode(secret), c.result, now.Add(-24*time.Hour), c.onset, now)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.e.SubmitResult(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		if _, err := v.poll(secret); err != nil {
			t.Fatal(err)
		}
	}
	rs := v.records(tableResults)
	if len(rs) != 4 {
		t.Fatalf("%d result records, want 4", len(rs))
	}
	for _, r := range rs {
		if len(r.Value) != len(rs[0].Value) || len(r.Key) != len(rs[0].Key) {
			t.Errorf("result records of %d and %d bytes (keys %d and %d): their size tells what they say", len(r.Value), len(rs[0].Value), len(r.Key), len(rs[0].Key))
		}
	}
}
