package portal

import (
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"strings"
)

// pageFunc is a handler of a signed-in user's request.
type pageFunc func(w http.ResponseWriter, r *http.Request, ss *session)

// view returns the frame of a page for the session's user.
func (p *Portal) view(ss *session, page, title string) view {
	v := view{Page: page, Title: title, Authority: p.key.Name, Backend: p.backend.Status()}
	if ss != nil {
		v.User, v.Role, v.CSRF = ss.user, ss.role, ss.csrf
	}
	return v
}

// errorPage renders a page that says what went wrong and where to go.
func (p *Portal) errorPage(w http.ResponseWriter, r *http.Request, ss *session, code int, heading, msg string) {
	v := p.view(ss, "error", heading)
	next, label := "/", "Go to the start page"
	if ss == nil || ss.user == "" {
		next, label = "/signin", "Sign in"
	}
	v.Data = struct{ Heading, Message, Next, NextLabel string }{heading, msg, next, label}
	p.render(w, r, code, v)
}

// require wraps h: the request must come from a signed-in user of role
// (any role for ""), still in the users file with the same password and
// role; a POST must fit its size limit and carry the session's CSRF
// token. Otherwise the user is sent to sign in, or refused.
func (p *Portal) require(role Role, h pageFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ss := p.sessions.get(r)
		switch {
		case ss != nil && ss.expired && ss.user != "":
			http.Redirect(w, r, "/signin?expired=1", http.StatusSeeOther)
			return
		case ss == nil || ss.user == "":
			http.Redirect(w, r, "/signin", http.StatusSeeOther)
			return
		}
		u, ok, err := p.users.Lookup(ss.user)
		if err != nil {
			p.log.ErrorContext(r.Context(), "reading users", logAttrs(r, err)...)
			p.errorPage(w, r, ss, http.StatusInternalServerError, "The users file cannot be read", "Ask the portal's administrator to check its log.")
			return
		}
		if !ok || u.stamp() != ss.stamp || u.Role != ss.role {
			// Removed, or added again with a new password or role.
			p.sessions.end(w, ss)
			http.Redirect(w, r, "/signin?ended=1", http.StatusSeeOther)
			return
		}
		if role != "" && ss.role != role {
			p.errorPage(w, r, ss, http.StatusForbidden, "Not for your role",
				"This page is for "+string(role)+" accounts; you are signed in as "+string(ss.role)+".")
			return
		}
		if r.Method == http.MethodPost && !p.checkForm(w, r, ss) {
			return
		}
		h(w, r, ss)
	})
}

// checkForm reads a POST's form within its size limit and checks its CSRF
// token, answering the request itself when either fails.
func (p *Portal) checkForm(w http.ResponseWriter, r *http.Request, ss *session) bool {
	limit := int64(maxFormBytes)
	if r.URL.Path == "/trace" {
		limit = maxTraceBytes
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	var err error
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "multipart/form-data" {
		// All in memory: a patient's trace is never written to a
		// temporary file.
		err = r.ParseMultipartForm(limit + 1<<20)
	} else {
		err = r.ParseForm()
	}
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			p.errorPage(w, r, ss, http.StatusRequestEntityTooLarge, "Too large", "The form is larger than this portal accepts.")
			return false
		}
		p.errorPage(w, r, ss, http.StatusBadRequest, "Bad form", "The form could not be read.")
		return false
	}
	if !validCSRF(ss, r.PostFormValue("csrf")) {
		p.log.WarnContext(r.Context(), "refused a form without this session's CSRF token", "path", r.URL.Path, "user", ss.user)
		p.errorPage(w, r, ss, http.StatusForbidden, "Form refused",
			"This form does not carry this session's security token, so it may not come from this portal: nothing was done. Open the page again and resubmit.")
		return false
	}
	return true
}

// home sends users to their role's first page.
func (p *Portal) home(w http.ResponseWriter, r *http.Request) {
	ss := p.sessions.get(r)
	switch {
	case ss == nil || ss.user == "" || ss.expired:
		http.Redirect(w, r, "/signin", http.StatusSeeOther)
	case ss.role == Admin:
		http.Redirect(w, r, "/users", http.StatusSeeOther)
	default:
		http.Redirect(w, r, "/result", http.StatusSeeOther)
	}
}

// notFound answers paths the portal does not serve.
func (p *Portal) notFound(w http.ResponseWriter, r *http.Request) {
	p.errorPage(w, r, p.sessions.get(r), http.StatusNotFound, "Not found", "There is no such page.")
}

// signinData is the sign-in page's own data.
type signinData struct {
	Name        string
	MaxFailures int
	LockMinutes int
}

// signinView returns the sign-in page for an anonymous session.
func (p *Portal) signinView(ss *session, name string) view {
	v := p.view(ss, "signin", "Sign in")
	v.User, v.Role = "", "" // the frame shows no signed-in user
	v.Data = signinData{Name: name, MaxFailures: MaxFailures, LockMinutes: int(LockDuration.Minutes())}
	return v
}

// signinForm shows the sign-in form, with an anonymous session whose CSRF
// token the form carries.
func (p *Portal) signinForm(w http.ResponseWriter, r *http.Request) {
	ss := p.sessions.get(r)
	if ss != nil && ss.user != "" && !ss.expired {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if ss == nil || ss.expired {
		ss = p.sessions.start(w, ss, nil)
	}
	v := p.signinView(ss, "")
	q := r.URL.Query()
	switch {
	case q.Has("expired"):
		v.Notice = "Your session expired. Sign in again."
	case q.Has("ended"):
		v.Notice = "Your session ended because your account changed. Sign in again."
	case q.Has("signedout"):
		v.Notice = "You are signed out."
	}
	p.render(w, r, http.StatusOK, v)
}

// signin checks the name and password and starts a signed-in session.
func (p *Portal) signin(w http.ResponseWriter, r *http.Request) {
	ss := p.sessions.get(r)
	if ss == nil || ss.expired {
		// No anonymous session: the form is stale (or forged). Start
		// one, so that the form shown now works.
		ss = p.sessions.start(w, ss, nil)
		v := p.signinView(ss, "")
		v.Error = "The sign-in form had expired. Sign in again."
		p.render(w, r, http.StatusForbidden, v)
		return
	}
	if !p.checkForm(w, r, ss) {
		return
	}
	name := strings.ToLower(strings.TrimSpace(r.PostFormValue("name")))
	u, err := p.auth.signIn(r.Context(), name, r.PostFormValue("password"))
	if err != nil {
		v := p.signinView(ss, name)
		var locked *LockedError
		code := http.StatusUnauthorized
		switch {
		case errors.As(err, &locked):
			v.Error, code = "Too many wrong passwords: this account is locked until "+locked.Until.UTC().Format("15:04")+" UTC. Try again then, or ask an administrator.", http.StatusTooManyRequests
		case errors.Is(err, ErrWrongPassword):
			v.Error = "Wrong user name or password."
		default:
			p.log.ErrorContext(r.Context(), "sign-in", logAttrs(r, err)...)
			v.Error, code = "Signing in failed; ask the portal's administrator to check its log.", http.StatusInternalServerError
		}
		if code != http.StatusInternalServerError {
			p.log.WarnContext(r.Context(), "sign-in refused", "user", name, "reason", err.Error())
		}
		p.render(w, r, code, v)
		return
	}
	p.log.InfoContext(r.Context(), "signed in", "user", u.Name, "role", u.Role)
	p.sessions.start(w, ss, &u)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// signout ends the session.
func (p *Portal) signout(w http.ResponseWriter, r *http.Request, ss *session) {
	p.sessions.end(w, ss)
	http.Redirect(w, r, "/signin?signedout=1", http.StatusSeeOther)
}

// logAttrs is for the log of a page's failure.
func logAttrs(r *http.Request, err error) []any {
	return []any{slog.String("path", r.URL.Path), slog.Any("err", err)}
}
