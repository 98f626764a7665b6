package portal

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Lock-out: after MaxFailures wrong passwords in a row for one user name,
// with no more than LockDuration between them, the name is locked for
// LockDuration, during which even the right password is refused. The
// count lives in the portal's memory: a restart, which only whoever runs
// the portal can cause, clears it. Names that are not users are counted
// too (up to maxTracked of them), so that the answer never tells whether
// a name exists. The price of per-user lock-out is that anyone can lock a
// known user out for LockDuration; an admin sees that in the log.
const (
	MaxFailures  = 5
	LockDuration = 15 * time.Minute
)

// maxTracked bounds the user names whose failures are counted. Real
// users' names are counted whatever the number of others.
const maxTracked = 10_000

// maxHashing bounds the password hashes computed at once (64 MiB each),
// so that a flood of sign-ins cannot exhaust memory; the rest wait.
const maxHashing = 2

// ErrWrongPassword is returned for an unknown name or a wrong password:
// the two are not told apart.
var ErrWrongPassword = errors.New("wrong user name or password")

// LockedError is returned while a name is locked out.
type LockedError struct{ Until time.Time }

func (e *LockedError) Error() string {
	return fmt.Sprintf("too many wrong passwords: this account is locked until %s UTC", e.Until.UTC().Format("15:04"))
}

// failures is one name's recent failures.
type failures struct {
	count       int
	last        time.Time
	lockedUntil time.Time
}

// authenticator checks passwords and keeps the lock-out counts.
type authenticator struct {
	users *Users
	now   func() time.Time
	sem   chan struct{}
	// dummy is a hash that an unknown name's password is checked
	// against, so that it costs as much time as a known one's.
	dummy string

	mu    sync.Mutex
	names map[string]*failures
}

func newAuthenticator(users *Users, now func() time.Time) (*authenticator, error) {
	dummy, err := hashPassword("not a password of anyone's", users.argon)
	if err != nil {
		return nil, err
	}
	return &authenticator{users: users, now: now, sem: make(chan struct{}, maxHashing), dummy: dummy,
		names: make(map[string]*failures)}, nil
}

// signIn returns the user if password is theirs. It fails with
// ErrWrongPassword or a *LockedError, or another error when the users file
// cannot be read.
func (a *authenticator) signIn(ctx context.Context, name, password string) (User, error) {
	u, known, err := a.users.Lookup(name)
	if err != nil {
		return User{}, err
	}
	if err := a.begin(name, known); err != nil {
		return User{}, err
	}
	hash := a.dummy
	if known {
		hash = u.Hash
	}
	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		a.end(name, false)
		return User{}, fmt.Errorf("portal: waiting to check a password: %w", ctx.Err())
	}
	ok, err := checkPassword(hash, password)
	<-a.sem
	ok = ok && known && err == nil
	a.end(name, ok)
	switch {
	case err != nil:
		return User{}, fmt.Errorf("user %s: %w", name, err)
	case !ok:
		return User{}, ErrWrongPassword
	}
	return u, nil
}

// begin refuses a locked name and counts the attempt as a failure until
// end says otherwise, so that concurrent attempts cannot guess more than
// MaxFailures passwords between two locks.
func (a *authenticator) begin(name string, known bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	f := a.names[name]
	if f == nil {
		if !known && len(a.names) >= maxTracked {
			a.pruneLocked(now)
		}
		if !known && len(a.names) >= maxTracked {
			// Not a user: nothing to protect, only an answer to keep
			// alike, which a full table no longer allows.
			return nil
		}
		f = &failures{}
		a.names[name] = f
	}
	if now.Before(f.lockedUntil) {
		return &LockedError{Until: f.lockedUntil}
	}
	if now.Sub(f.last) > LockDuration {
		f.count = 0 // failures that far apart are not a series
	}
	if f.count >= MaxFailures {
		return &LockedError{Until: f.last.Add(LockDuration)}
	}
	f.count++
	f.last = now
	return nil
}

// end records the outcome of an attempt begun.
func (a *authenticator) end(name string, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.names[name]
	if f == nil {
		return
	}
	if ok {
		delete(a.names, name)
		return
	}
	if f.count >= MaxFailures {
		f.lockedUntil = a.now().Add(LockDuration)
		f.count = 0
	}
}

// pruneLocked forgets the names whose series of failures is over.
func (a *authenticator) pruneLocked(now time.Time) {
	for n, f := range a.names {
		if now.Sub(f.last) > LockDuration && !now.Before(f.lockedUntil) {
			delete(a.names, n)
		}
	}
}
