package portal

import (
	"bytes"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// The audit log is a CSV file, one row per event, appended and synced
// before the portal goes on: who signed what and when, and what the
// backend answered. It holds test codes, results and test dates, never
// anything that names a patient, and of a GPS trace only its number of
// fixes. A signature is logged before it leaves the portal, and nothing is
// sent if that fails, so that every signed statement the backend may hold
// has its row; the backend's answer follows in a second row with the same
// reference.
//
// Columns: time (RFC 3339, UTC), user, action (result or gps-trace), ref
// (pairs a signature with its outcome), test_code, detail, outcome
// (signed, accepted, refused: …, failed: …).

// auditHeader is the CSV's first row.
var auditHeader = []string{"time", "user", "action", "ref", "test_code", "detail", "outcome"}

// Audit actions.
const (
	ActionResult = "result"
	ActionTrace  = "gps-trace"
)

// AuditEntry is one row of the audit log.
type AuditEntry struct {
	Time     time.Time
	User     string
	Action   string
	Ref      string
	TestCode string
	Detail   string
	Outcome  string
}

func (e AuditEntry) row() []string {
	return []string{e.Time.UTC().Format(time.RFC3339), e.User, e.Action, e.Ref, e.TestCode, e.Detail, e.Outcome}
}

// newRef returns a new reference pairing a signature's rows: 12 hex
// digits, which no spreadsheet takes for a formula.
func newRef() string {
	b := make([]byte, 6)
	rand.Read(b) // never fails (crypto/rand panics on a broken source)
	return hex.EncodeToString(b)
}

// Audit is the audit log file.
type Audit struct {
	path string
	mu   sync.Mutex
}

// OpenAudit returns the audit log at path, created (mode 0600) at its
// first entry.
func OpenAudit(path string) *Audit { return &Audit{path: path} }

// Path returns the audit log's path.
func (a *Audit) Path() string { return a.path }

// Append writes e and syncs the file.
func (a *Audit) Append(e AuditEntry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("portal: audit log: %w", err)
	}
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	if st, err := f.Stat(); err == nil && st.Size() == 0 {
		w.Write(auditHeader)
	}
	w.Write(e.row())
	w.Flush()
	_, werr := f.Write(b.Bytes())
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("portal: audit log: %w", err)
	}
	return nil
}

// Entries returns the log's entries, newest first; a missing log has none.
func (a *Audit) Entries() ([]AuditEntry, error) {
	a.mu.Lock()
	b, err := os.ReadFile(a.path)
	a.mu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("portal: audit log: %w", err)
	}
	r := csv.NewReader(bytes.NewReader(b))
	r.FieldsPerRecord = len(auditHeader)
	var out []AuditEntry
	for first := true; ; first = false {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("portal: audit log %s: %w", a.path, err)
		}
		if first && slices.Equal(rec, auditHeader) {
			continue
		}
		t, err := time.Parse(time.RFC3339, rec[0])
		if err != nil {
			return nil, fmt.Errorf("portal: audit log %s: time %q: %w", a.path, rec[0], err)
		}
		out = append(out, AuditEntry{Time: t, User: rec[1], Action: rec[2], Ref: rec[3], TestCode: rec[4], Detail: rec[5], Outcome: rec[6]})
	}
	slices.Reverse(out)
	return out, nil
}

// WriteCSV writes the entries, oldest first, as CSV with a header. Fields
// that a spreadsheet would take for a formula are prefixed with an
// apostrophe: a backend's error message ends up in them.
func WriteCSV(w io.Writer, entries []AuditEntry) error {
	cw := csv.NewWriter(w)
	cw.Write(auditHeader)
	for _, e := range slices.Backward(entries) {
		row := e.row()
		for i, f := range row {
			if f != "" && strings.ContainsRune("=+-@\t\r", rune(f[0])) {
				row[i] = "'" + f
			}
		}
		cw.Write(row)
	}
	cw.Flush()
	return cw.Error()
}
