package portal

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/conftrace/conftrace/api"
)

// resultFormData is the result form's own data: the values entered.
type resultFormData struct {
	Code, Result, TestDate, Onset string
	Today                         string
}

// resultForm shows the form for a test result, filled in again when the
// user chose to change a draft.
func (p *Portal) resultForm(w http.ResponseWriter, r *http.Request, ss *session) {
	today := time.Now().UTC().Format(api.DateLayout)
	d := resultFormData{TestDate: today, Today: today}
	if c := ss.confirmed; c != nil && r.URL.Query().Get("edit") == c.ID {
		d.Code, d.TestDate, d.Onset = c.Code, c.TestDate, c.Onset
		d.Result = "negative"
		if c.Positive {
			d.Result = "positive"
		}
	}
	v := p.view(ss, "result", "Enter a test result")
	v.Data = d
	p.render(w, r, http.StatusOK, v)
}

// resultReview checks what was entered and asks for confirmation.
func (p *Portal) resultReview(w http.ResponseWriter, r *http.Request, ss *session) {
	today := time.Now().UTC().Format(api.DateLayout)
	in := resultFormData{
		Code: strings.TrimSpace(r.PostFormValue("code")), Result: r.PostFormValue("result"),
		TestDate: r.PostFormValue("test_date"), Onset: r.PostFormValue("onset"), Today: today,
	}
	d, err := checkResult(in, today)
	if err == nil && !p.backend.Status().Verified {
		err = ErrNotVerified
	}
	if err != nil {
		v := p.view(ss, "result", "Enter a test result")
		v.Error, v.Data = sentence(err.Error()), in
		p.render(w, r, http.StatusUnprocessableEntity, v)
		return
	}
	d.ID = randomToken()[:16]
	p.sessions.setDraft(ss, &d)
	v := p.view(ss, "confirm", "Check and sign")
	v.Data = d
	p.render(w, r, http.StatusOK, v)
}

// checkResult validates a result form. Dates after today are refused here;
// the backend judges the rest (a test date outside its retention window).
func checkResult(in resultFormData, today string) (draft, error) {
	code, err := api.NormalizeTestCode(in.Code)
	if err != nil {
		return draft{}, fmt.Errorf("the test code is not valid (%v): check it with the patient", err)
	}
	d := draft{Code: code, TestDate: in.TestDate, Onset: in.Onset}
	switch in.Result {
	case "positive":
		d.Positive = true
	case "negative":
	default:
		return draft{}, errors.New("choose positive or negative")
	}
	for _, f := range []struct{ name, v string }{{"sample", in.TestDate}, {"symptom onset", in.Onset}} {
		if f.v == "" && f.name == "symptom onset" {
			continue
		}
		if _, err := time.Parse(api.DateLayout, f.v); err != nil {
			return draft{}, fmt.Errorf("the %s date %q is not a date (YYYY-MM-DD)", f.name, f.v)
		}
		if f.v > today {
			return draft{}, fmt.Errorf("the %s date %s is in the future", f.name, f.v)
		}
	}
	return d, nil
}

// answerData is the answer page's own data.
type answerData struct {
	Accepted bool
	Code     string
	Result   api.Result
	Message  string
}

// resultSubmit signs the confirmed draft, logs the signature, submits it
// and shows the backend's answer.
func (p *Portal) resultSubmit(w http.ResponseWriter, r *http.Request, ss *session) {
	d := ss.confirmed
	if d == nil || r.PostFormValue("draft") != d.ID {
		p.errorPage(w, r, ss, http.StatusConflict, "Nothing to sign",
			"This confirmation is no longer current (it was signed already, or another was started since). Enter the result again.")
		return
	}
	// One confirmation signs once, whatever the browser resends.
	p.sessions.setDraft(ss, nil)
	signed, submit, err := p.backend.signResult(*d, time.Now())
	if err != nil {
		p.errorPage(w, r, ss, http.StatusServiceUnavailable, "Not signed", err.Error())
		return
	}
	e := AuditEntry{Time: time.Now(), User: ss.user, Action: ActionResult, Ref: newRef(), TestCode: signed.TestCode,
		Detail: fmt.Sprintf("%s, sample %s", signed.Result, signed.TestDate), Outcome: "signed"}
	if err := p.audit.Append(e); err != nil {
		p.log.ErrorContext(r.Context(), "audit log", logAttrs(r, err)...)
		p.errorPage(w, r, ss, http.StatusInternalServerError, "Not sent", "The audit log cannot be written, so the signed result was not sent. Ask the portal's administrator to check its log.")
		return
	}
	err = submit(r.Context())
	a := answerData{Accepted: err == nil, Code: signed.TestCode, Result: signed.Result}
	e.Time, e.Outcome = time.Now(), "accepted"
	if err != nil {
		a.Message, e.Outcome = describe(err), outcome(err)
	}
	p.log.InfoContext(r.Context(), "result submitted", "user", ss.user, "code", signed.TestCode, "result", signed.Result, "outcome", e.Outcome)
	v := p.view(ss, "answer", "Backend's answer")
	if aerr := p.audit.Append(e); aerr != nil {
		p.log.ErrorContext(r.Context(), "audit log", logAttrs(r, aerr)...)
		v.Error = "The backend's answer could not be written to the audit log; the signature was."
	}
	v.Data = a
	code := http.StatusOK
	if err != nil {
		code = http.StatusBadGateway
	}
	p.render(w, r, code, v)
}

// describe words a failed submission for the page: the backend's refusal
// with its code, or why the backend could not be reached or trusted.
func describe(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return fmt.Sprintf("the backend refused it (%s): %s", ae.Code, ae.Message)
	}
	return "it could not be delivered: " + err.Error()
}

// outcome is a failed submission's audit log outcome.
func outcome(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return "refused: " + ae.Code
	}
	return "failed: " + err.Error()
}
