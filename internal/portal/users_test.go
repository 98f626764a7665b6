package portal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// New hashes use the documented Argon2id parameters and verify.
func TestPasswordHash(t *testing.T) {
	u := OpenUsers(filepath.Join(t.TempDir(), "users.json"))
	if err := u.Add(t.Context(), "alice", Staff, "correct horse battery", time.Now()); err != nil {
		t.Fatal(err)
	}
	a, ok, err := u.Lookup("alice")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if !strings.HasPrefix(a.Hash, "$argon2id$v=19$m=65536,t=3,p=1$") {
		t.Errorf("hash %q; want Argon2id with 64 MiB, 3 passes, 1 lane", a.Hash)
	}
	for pw, want := range map[string]bool{"correct horse battery": true, "correct horse battery ": false, "": false} {
		if ok, err := checkPassword(a.Hash, pw); ok != want || err != nil {
			t.Errorf("password %q: %v, %v; want %v", pw, ok, err, want)
		}
	}
	// A damaged hash is an error, never a match, and never a huge
	// allocation.
	for _, bad := range []string{"", "$argon2i$v=19$m=65536,t=3,p=1$c2FsdA$a2V5", strings.Replace(a.Hash, "m=65536", "m=4194304", 1),
		strings.Replace(a.Hash, "t=3", "t=0", 1), a.Hash[:len(a.Hash)-35]} {
		if ok, err := checkPassword(bad, "correct horse battery"); ok || err == nil {
			t.Errorf("hash %q: %v, %v; want an error", bad, ok, err)
		}
	}
}

func TestUsersFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.json")
	u := OpenUsers(path)
	u.argon = argonParams{time: 1, memory: 1 << 10, threads: 1}
	if list, err := u.List(); err != nil || len(list) != 0 {
		t.Fatalf("a missing file: %v, %v; want no users", list, err)
	}
	// Concurrent changes, as by the portal and the command at once, all
	// land: the lock serializes them.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			errs[i] = u.Add(t.Context(), fmt.Sprintf("user%d", i), Staff, "a long enough password", time.Now())
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	list, err := u.List()
	if err != nil || len(list) != len(errs) {
		t.Fatalf("after %d concurrent adds: %d users, %v", len(errs), len(list), err)
	}
	for i := 1; i < len(list); i++ {
		if list[i-1].Name >= list[i].Name {
			t.Errorf("users not sorted: %s before %s", list[i-1].Name, list[i].Name)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("users file mode %v, want 0600", fi.Mode().Perm())
	}
	if err := u.Add(t.Context(), "user3", Admin, "a long enough password", time.Now()); !errors.Is(err, ErrUserExists) {
		t.Errorf("adding a taken name: %v, want ErrUserExists", err)
	}
	if err := u.Remove(t.Context(), "user3"); err != nil {
		t.Fatal(err)
	}
	if err := u.Remove(t.Context(), "user3"); !errors.Is(err, ErrNoUser) {
		t.Errorf("removing twice: %v, want ErrNoUser", err)
	}
	for _, tt := range []struct{ name, role, pw string }{
		{"Alice", "staff", "a long enough password"},
		{"a b", "staff", "a long enough password"},
		{"", "staff", "a long enough password"},
		{"bob", "root", "a long enough password"},
		{"bob", "staff", "short"},
		{"bob", "staff", strings.Repeat("x", MaxPasswordBytes+1)},
	} {
		if err := u.Add(t.Context(), tt.name, Role(tt.role), tt.pw, time.Now()); err == nil {
			t.Errorf("added %q (%s) with a %d-byte password", tt.name, tt.role, len(tt.pw))
		}
	}
	// No temporary file is left beside it.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "users.json" && e.Name() != "users.json.lock" {
			t.Errorf("left %s in the users file's directory", e.Name())
		}
	}
	// A file that is not a users file is refused, not taken as empty.
	if err := os.WriteFile(path, []byte(`{"version":1,"users":[{"name":"x","role":"god","hash":""}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := u.List(); err == nil {
		t.Error("a users file with an unknown role was read")
	}
}

// Formulas never reach a spreadsheet from the audit CSV.
func TestAuditCSVEscapesFormulas(t *testing.T) {
	var b strings.Builder
	err := WriteCSV(&b, []AuditEntry{{Time: time.Unix(0, 0), User: "alice", Action: ActionResult, Outcome: "failed: =HYPERLINK(\"x\")"},
		{Time: time.Unix(0, 0), User: "alice", Action: ActionResult, Outcome: "=1+1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "'=1+1") || strings.Contains(b.String(), ",=1+1") {
		t.Errorf("CSV:\n%s", b.String())
	}
}
