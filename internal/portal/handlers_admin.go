package portal

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// maxAuditRows bounds the rows the audit page shows; the CSV has all.
const maxAuditRows = 500

// auditPage shows the audit log, newest first.
func (p *Portal) auditPage(w http.ResponseWriter, r *http.Request, ss *session) {
	entries, err := p.audit.Entries()
	if err != nil {
		p.log.ErrorContext(r.Context(), "audit log", logAttrs(r, err)...)
		p.errorPage(w, r, ss, http.StatusInternalServerError, "The audit log cannot be read", "Ask the portal's administrator to check its log.")
		return
	}
	total := len(entries)
	more := total > maxAuditRows
	if more {
		entries = entries[:maxAuditRows]
	}
	v := p.view(ss, "audit", "Audit log")
	v.Data = struct {
		Entries []AuditEntry
		More    bool
		Total   int
	}{entries, more, total}
	p.render(w, r, http.StatusOK, v)
}

// auditCSV sends the whole audit log as a CSV download.
func (p *Portal) auditCSV(w http.ResponseWriter, r *http.Request, ss *session) {
	entries, err := p.audit.Entries()
	if err != nil {
		p.log.ErrorContext(r.Context(), "audit log", logAttrs(r, err)...)
		p.errorPage(w, r, ss, http.StatusInternalServerError, "The audit log cannot be read", "Ask the portal's administrator to check its log.")
		return
	}
	name := fmt.Sprintf("audit-%s-%s.csv", p.key.Name, time.Now().UTC().Format("20060102-150405"))
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	if err := WriteCSV(w, entries); err != nil {
		p.log.ErrorContext(r.Context(), "audit CSV", logAttrs(r, err)...)
	}
}

// usersData is the users page's own data.
type usersData struct {
	Users       []User
	MinPassword int
}

// usersPage lists the users, with the form to add one.
func (p *Portal) usersPage(w http.ResponseWriter, r *http.Request, ss *session) {
	p.renderUsers(w, r, ss, http.StatusOK, "", "")
}

func (p *Portal) renderUsers(w http.ResponseWriter, r *http.Request, ss *session, code int, notice, problem string) {
	list, err := p.users.List()
	if err != nil {
		p.log.ErrorContext(r.Context(), "reading users", logAttrs(r, err)...)
		p.errorPage(w, r, ss, http.StatusInternalServerError, "The users file cannot be read", "Check the portal's log.")
		return
	}
	v := p.view(ss, "users", "Users")
	v.Notice, v.Error = notice, problem
	v.Data = usersData{Users: list, MinPassword: MinPasswordLength}
	p.render(w, r, code, v)
}

// userAdd adds a user.
func (p *Portal) userAdd(w http.ResponseWriter, r *http.Request, ss *session) {
	name := strings.ToLower(strings.TrimSpace(r.PostFormValue("name")))
	pw := r.PostFormValue("password")
	if pw != r.PostFormValue("password2") {
		p.renderUsers(w, r, ss, http.StatusUnprocessableEntity, "", "The two passwords differ.")
		return
	}
	role, err := ParseRole(r.PostFormValue("role"))
	if err == nil {
		err = p.users.Add(r.Context(), name, role, pw, time.Now())
	}
	if err != nil {
		p.renderUsers(w, r, ss, http.StatusUnprocessableEntity, "", "Not added: "+strings.TrimPrefix(err.Error(), "portal: "))
		return
	}
	p.log.InfoContext(r.Context(), "user added", "by", ss.user, "user", name, "role", role)
	p.renderUsers(w, r, ss, http.StatusOK, fmt.Sprintf("Added %s (%s).", name, role), "")
}

// userRemove removes a user, never the admin doing it: an admin who
// removed themselves could be left with no one to manage users but the
// command line.
func (p *Portal) userRemove(w http.ResponseWriter, r *http.Request, ss *session) {
	name := r.PostFormValue("name")
	if name == ss.user {
		p.renderUsers(w, r, ss, http.StatusUnprocessableEntity, "", "You cannot remove yourself.")
		return
	}
	if err := p.users.Remove(r.Context(), name); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ErrNoUser) {
			code = http.StatusNotFound
		}
		p.renderUsers(w, r, ss, code, "", "Not removed: "+strings.TrimPrefix(err.Error(), "portal: "))
		return
	}
	p.log.InfoContext(r.Context(), "user removed", "by", ss.user, "user", name)
	p.renderUsers(w, r, ss, http.StatusOK, "Removed "+name+".", "")
}

// backendPage shows what the portal verified and pinned.
func (p *Portal) backendPage(w http.ResponseWriter, r *http.Request, ss *session) {
	p.render(w, r, http.StatusOK, p.view(ss, "backend", "Backend"))
}

// backendVerify verifies the backend again, with the pins taken at the
// first verification.
func (p *Portal) backendVerify(w http.ResponseWriter, r *http.Request, ss *session) {
	p.verify(r.Context())
	v := p.view(ss, "backend", "Backend")
	code := http.StatusOK
	if v.Backend.Verified {
		v.Notice = "The backend verified."
	} else {
		code = http.StatusBadGateway
	}
	p.render(w, r, code, v)
}
