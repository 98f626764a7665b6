package portal

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/conftrace/conftrace/gps"
)

// traceData is the trace page's own data: the problems of a refused file.
type traceData struct {
	Problems []LineError
	More     int
}

// traceForm shows the upload form.
func (p *Portal) traceForm(w http.ResponseWriter, r *http.Request, ss *session) {
	v := p.view(ss, "trace", "Upload a GPS trace")
	v.Data = traceData{}
	p.render(w, r, http.StatusOK, v)
}

// traceUpload parses the uploaded trace; a valid one is signed, logged
// and submitted, an invalid one shown back with its problems line by
// line. The file's bytes are cleared once parsed, as the command line
// does: a patient's movements should not outlive their use in memory.
func (p *Portal) traceUpload(w http.ResponseWriter, r *http.Request, ss *session) {
	if r.MultipartForm != nil {
		defer r.MultipartForm.RemoveAll()
	}
	v := p.view(ss, "trace", "Upload a GPS trace")
	v.Data = traceData{}
	fail := func(code int, msg string) {
		v.Error = msg
		p.render(w, r, code, v)
	}
	if r.PostFormValue("consent") != "yes" {
		fail(http.StatusUnprocessableEntity, "Confirm that the patient tested positive and agreed to share the trace.")
		return
	}
	f, hdr, err := r.FormFile("trace")
	if err != nil {
		fail(http.StatusUnprocessableEntity, "Choose a trace file.")
		return
	}
	defer f.Close()
	kind, err := traceKind(r.PostFormValue("format"), hdr.Filename)
	if err != nil {
		fail(http.StatusUnprocessableEntity, sentence(err.Error()))
		return
	}
	data, err := io.ReadAll(f)
	if err != nil {
		fail(http.StatusBadRequest, "The file could not be read.")
		return
	}
	tr, err := parseTrace(kind, data, gps.Limits{})
	clear(data)
	if err != nil {
		var te *TraceError
		if errors.As(err, &te) {
			v.Data = traceData{Problems: te.Problems, More: te.More}
		}
		fail(http.StatusUnprocessableEntity, fmt.Sprintf("The %s file was refused and nothing was uploaded.", strings.ToUpper(kind)))
		return
	}
	defer clear(tr)
	n, err := p.submitTrace(r, ss, tr)
	if err != nil {
		fail(http.StatusBadGateway, sentence(err.Error()))
		return
	}
	v.Notice = fmt.Sprintf("The backend stored the trace: %d fixes.", n)
	p.render(w, r, http.StatusOK, v)
}

// submitTrace signs, logs and submits a trace; the error is for the page.
func (p *Portal) submitTrace(r *http.Request, ss *session, tr gps.Trace) (int, error) {
	submit, err := p.backend.signTrace(tr, time.Now())
	if err != nil {
		return 0, fmt.Errorf("not signed: %w", err)
	}
	e := AuditEntry{Time: time.Now(), User: ss.user, Action: ActionTrace, Ref: newRef(),
		Detail: fmt.Sprintf("%d fixes", len(tr)), Outcome: "signed"}
	if err := p.audit.Append(e); err != nil {
		p.log.ErrorContext(r.Context(), "audit log", logAttrs(r, err)...)
		return 0, errors.New("the audit log cannot be written, so the signed trace was not sent: ask the portal's administrator to check its log")
	}
	n, err := submit(r.Context())
	e.Time, e.Outcome = time.Now(), "accepted"
	if err != nil {
		e.Outcome = outcome(err)
	} else {
		e.Detail = fmt.Sprintf("%d fixes, %d stored", len(tr), n)
	}
	p.log.InfoContext(r.Context(), "trace submitted", "user", ss.user, "fixes", len(tr), "outcome", e.Outcome)
	if aerr := p.audit.Append(e); aerr != nil {
		p.log.ErrorContext(r.Context(), "audit log", logAttrs(r, aerr)...)
	}
	if err != nil {
		return 0, fmt.Errorf("the trace was not stored: %s", describe(err))
	}
	return n, nil
}

// sentence makes an error's text a sentence for a page: an ASCII first
// letter upper-cased, a full stop at the end.
func sentence(s string) string {
	if s != "" && s[0] >= 'a' && s[0] <= 'z' {
		s = string(s[0]-'a'+'A') + s[1:]
	}
	if s != "" && !strings.ContainsRune(".!?", rune(s[len(s)-1])) {
		s += "."
	}
	return s
}
