package portal

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

// Sessions: a random 256-bit identifier in a cookie, kept only as its
// SHA-256 in the portal's memory (so that neither a memory dump nor a
// timing difference in the map lookup hands out a live identifier), with
// a CSRF token of its own. A session ends IdleTimeout after its last
// request, SessionLifetime after sign-in whatever its use, at sign-out,
// when the portal restarts, and when its user is removed or given a new
// password.
const (
	IdleTimeout     = 30 * time.Minute
	SessionLifetime = 8 * time.Hour
)

// maxSessions bounds the sessions kept, signed in or not: a flood of
// sign-in pages evicts the oldest anonymous ones first.
const maxSessions = 10_000

// Cookie names. The __Host- prefix makes browsers refuse the cookie
// unless it is Secure, host-only and for path /, so that no other site
// on the domain, nor a plain-HTTP page, can set or shadow it; it is
// therefore used only when the cookie is Secure.
const (
	cookieName       = "portal_session"
	secureCookieName = "__Host-portal_session"
)

// session is one browser's session. An anonymous one (user "") exists
// to carry the CSRF token of the sign-in form.
type session struct {
	key       [sha256.Size]byte // SHA-256 of the cookie's identifier
	user      string
	role      Role
	stamp     string // User.stamp at sign-in
	csrf      string
	created   time.Time
	lastSeen  time.Time
	expired   bool   // set on the copy returned for an expired session
	confirmed *draft // the result awaiting confirmation, if any
}

// draft is a result entered and not yet confirmed.
type draft struct {
	// ID names the draft in the confirmation form, so that a form
	// confirmed in one tab never submits a draft entered in another.
	ID       string
	Code     string
	Positive bool
	TestDate string
	Onset    string
}

// sessions is the in-memory session store.
type sessions struct {
	now    func() time.Time
	secure bool

	mu sync.Mutex
	m  map[[sha256.Size]byte]*session
}

func newSessions(now func() time.Time, secure bool) *sessions {
	return &sessions{now: now, secure: secure, m: make(map[[sha256.Size]byte]*session)}
}

func (s *sessions) cookieName() string {
	if s.secure {
		return secureCookieName
	}
	return cookieName
}

// randomToken returns 32 random bytes, base64url-encoded.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand panics on a broken source)
	return base64.RawURLEncoding.EncodeToString(b)
}

// get returns a copy of the request's session, or nil. A session past its
// idle or absolute limit is deleted and returned once with expired set, so
// that the page can say why the user must sign in again.
func (s *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(s.cookieName())
	if err != nil {
		return nil
	}
	key := sha256.Sum256([]byte(c.Value))
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.m[key]
	if ss == nil {
		return nil
	}
	now := s.now()
	if now.Sub(ss.lastSeen) > IdleTimeout || now.Sub(ss.created) > SessionLifetime {
		delete(s.m, key)
		cp := *ss
		cp.expired = true
		return &cp
	}
	ss.lastSeen = now
	cp := *ss
	return &cp
}

// start makes a new session for user (anonymous for ""), sets its cookie
// and returns it. A session is never reused across sign-in: the cookie an
// attacker may have planted before (session fixation) is worth nothing
// after.
func (s *sessions) start(w http.ResponseWriter, old *session, u *User) *session {
	id := randomToken()
	now := s.now()
	ss := &session{key: sha256.Sum256([]byte(id)), csrf: randomToken(), created: now, lastSeen: now}
	if u != nil {
		ss.user, ss.role, ss.stamp = u.Name, u.Role, u.stamp()
	}
	s.mu.Lock()
	if old != nil {
		delete(s.m, old.key)
	}
	if len(s.m) >= maxSessions {
		s.evictLocked(now)
	}
	s.m[ss.key] = ss
	s.mu.Unlock()
	http.SetCookie(w, s.cookie(id, int(SessionLifetime/time.Second)))
	cp := *ss
	return &cp
}

// end deletes the session and clears its cookie.
func (s *sessions) end(w http.ResponseWriter, ss *session) {
	if ss != nil {
		s.mu.Lock()
		delete(s.m, ss.key)
		s.mu.Unlock()
	}
	http.SetCookie(w, s.cookie("", -1))
}

// setDraft records (or, with nil, clears) the result awaiting
// confirmation in the session.
func (s *sessions) setDraft(ss *session, d *draft) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.m[ss.key]; cur != nil {
		cur.confirmed = d
	}
	ss.confirmed = d
}

// cookie is the session cookie: HttpOnly (no script reads it),
// SameSite=Strict (no other site's page or link sends it), Secure and
// __Host- when the portal is served over TLS.
func (s *sessions) cookie(value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: s.cookieName(), Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteStrictMode}
}

// evictLocked deletes expired sessions and, if the store is still full,
// the anonymous sessions least recently seen.
func (s *sessions) evictLocked(now time.Time) {
	for k, ss := range s.m {
		if now.Sub(ss.lastSeen) > IdleTimeout || now.Sub(ss.created) > SessionLifetime {
			delete(s.m, k)
		}
	}
	for len(s.m) >= maxSessions {
		var oldest *session
		for _, ss := range s.m {
			if ss.user == "" && (oldest == nil || ss.lastSeen.Before(oldest.lastSeen)) {
				oldest = ss
			}
		}
		if oldest == nil {
			return // all signed in: let the map grow rather than sign anyone out
		}
		delete(s.m, oldest.key)
	}
}

// validCSRF reports whether the form's token is the session's
// (synchronizer token pattern).
func validCSRF(ss *session, token string) bool {
	return ss != nil && token != "" && subtle.ConstantTimeCompare([]byte(ss.csrf), []byte(token)) == 1
}
