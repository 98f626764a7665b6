package portal

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/conftrace/conftrace/atomicfile"
	"github.com/conftrace/conftrace/filelock"
)

// Role is what a portal user may do.
type Role string

// The roles. They do not overlap: whoever manages accounts cannot sign
// results, so that no single account can both make a signer and sign.
const (
	// Staff sign test results and upload patients' GPS traces.
	Staff Role = "staff"
	// Admin adds and removes users.
	Admin Role = "admin"
)

// ParseRole returns the role called s.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case Staff, Admin:
		return r, nil
	}
	return "", fmt.Errorf("portal: role %q: want staff or admin", s)
}

// Password rules. The minimum follows NIST SP 800-63B for passwords
// chosen by their user; the maximum bounds what one sign-in hashes.
const (
	MinPasswordLength = 12   // characters
	MaxPasswordBytes  = 1024 // bytes
)

// argonParams are the cost parameters of an Argon2id hash.
type argonParams struct {
	time    uint32
	memory  uint32 // KiB
	threads uint8
}

// The parameters of new hashes are RFC 9106's second recommended option
// (64 MiB, 3 passes), with one lane so that a sign-in keeps one core busy
// for about a tenth of a second rather than all of them. Each hash records
// its parameters, so raising them later leaves old hashes readable.
const (
	argonTime    = 3
	argonMemory  = 64 << 10 // KiB
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// ErrUserExists and ErrNoUser are returned by Users.Add and Users.Remove.
var (
	ErrUserExists = errors.New("portal: a user of that name exists")
	ErrNoUser     = errors.New("portal: no such user")
)

// namePattern is what a user name may be: it appears in the audit log and
// in URLs' form values, so it is kept plain.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// CheckName refuses names other than 1 to 64 lower-case letters, digits,
// dots, dashes and underscores, starting with a letter or digit.
func CheckName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("portal: user name %q: want 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit", name)
	}
	return nil
}

// CheckPassword refuses passwords too short or too long to be hashed.
func CheckPassword(pw string) error {
	switch n := utf8.RuneCountInString(pw); {
	case n < MinPasswordLength:
		return fmt.Errorf("portal: the password has %d characters; at least %d are required", n, MinPasswordLength)
	case len(pw) > MaxPasswordBytes:
		return fmt.Errorf("portal: the password is longer than %d bytes", MaxPasswordBytes)
	}
	return nil
}

// User is one account of the users file.
type User struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Hash is the password's Argon2id hash in the PHC string format,
	// $argon2id$v=19$m=65536,t=3,p=1$salt$hash.
	Hash    string    `json:"hash"`
	Created time.Time `json:"created"`
}

// stamp identifies the user's current password: a session made under
// another (the user was removed and added again) is no longer valid.
func (u User) stamp() string {
	h := sha256.Sum256([]byte(u.Hash))
	return base64.RawURLEncoding.EncodeToString(h[:12])
}

// usersFile is the file's JSON form.
type usersFile struct {
	Version int    `json:"version"`
	Users   []User `json:"users"`
}

const usersVersion = 1

// Users is the users file. Every call reads it anew, so that the portal
// sees at once what `conftrace authority users` changed while it runs; a
// change holds the file's lock (package filelock) from its read to its
// atomic replacement, so that the portal and the command never lose each
// other's changes.
type Users struct {
	path string
	// argon are the parameters of the hashes Add makes: argonTime,
	// argonMemory and argonThreads, except in tests that sign in hundreds
	// of times.
	argon argonParams
}

// OpenUsers returns the users file at path, which need not exist yet.
func OpenUsers(path string) *Users {
	return &Users{path: path, argon: argonParams{argonTime, argonMemory, argonThreads}}
}

// Path returns the users file's path.
func (u *Users) Path() string { return u.path }

// List returns the users, sorted by name. A missing file has none.
func (u *Users) List() ([]User, error) {
	f, err := u.read()
	if err != nil {
		return nil, err
	}
	return f.Users, nil
}

// Lookup returns the user called name.
func (u *Users) Lookup(name string) (User, bool, error) {
	list, err := u.List()
	if err != nil {
		return User{}, false, err
	}
	i := slices.IndexFunc(list, func(x User) bool { return x.Name == name })
	if i < 0 {
		return User{}, false, nil
	}
	return list[i], true, nil
}

// Add hashes password and adds a user. It fails with ErrUserExists for a
// taken name: a password is changed by removing the user and adding it
// again, which also ends the user's sessions.
func (u *Users) Add(ctx context.Context, name string, role Role, password string, now time.Time) error {
	if err := CheckName(name); err != nil {
		return err
	}
	if _, err := ParseRole(string(role)); err != nil {
		return err
	}
	if err := CheckPassword(password); err != nil {
		return err
	}
	hash, err := hashPassword(password, u.argon)
	if err != nil {
		return err
	}
	return u.change(ctx, func(f *usersFile) error {
		if slices.ContainsFunc(f.Users, func(x User) bool { return x.Name == name }) {
			return fmt.Errorf("%w: %s", ErrUserExists, name)
		}
		f.Users = append(f.Users, User{Name: name, Role: role, Hash: hash, Created: now.UTC().Truncate(time.Second)})
		return nil
	})
}

// Remove deletes the user called name; its sessions end at their next
// request.
func (u *Users) Remove(ctx context.Context, name string) error {
	return u.change(ctx, func(f *usersFile) error {
		i := slices.IndexFunc(f.Users, func(x User) bool { return x.Name == name })
		if i < 0 {
			return fmt.Errorf("%w: %s", ErrNoUser, name)
		}
		f.Users = slices.Delete(f.Users, i, i+1)
		return nil
	})
}

// change applies edit to the file under its lock and writes it back
// atomically, mode 0600: it holds password hashes.
func (u *Users) change(ctx context.Context, edit func(*usersFile) error) error {
	unlock, err := filelock.Lock(ctx, u.path+".lock")
	if err != nil {
		return err
	}
	defer unlock()
	f, err := u.read()
	if err != nil {
		return err
	}
	if err := edit(&f); err != nil {
		return err
	}
	slices.SortFunc(f.Users, func(a, b User) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("portal: encoding users: %w", err)
	}
	if err := atomicfile.Write(u.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("portal: writing users: %w", err)
	}
	return nil
}

// read reads and checks the file; a missing one is empty.
func (u *Users) read() (usersFile, error) {
	b, err := os.ReadFile(u.path)
	if errors.Is(err, fs.ErrNotExist) {
		return usersFile{Version: usersVersion}, nil
	}
	if err != nil {
		return usersFile{}, fmt.Errorf("portal: reading users: %w", err)
	}
	var f usersFile
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		return usersFile{}, fmt.Errorf("portal: users file %s: %w", u.path, err)
	}
	if f.Version != usersVersion {
		return usersFile{}, fmt.Errorf("portal: users file %s: version %d, want %d", u.path, f.Version, usersVersion)
	}
	for _, x := range f.Users {
		if err := CheckName(x.Name); err != nil {
			return usersFile{}, fmt.Errorf("portal: users file %s: %w", u.path, err)
		}
		if _, err := ParseRole(string(x.Role)); err != nil {
			return usersFile{}, fmt.Errorf("portal: users file %s: user %s: %w", u.path, x.Name, err)
		}
	}
	return f, nil
}

// hashPassword returns password's Argon2id hash with a new salt, in the
// PHC string format.
func hashPassword(password string, a argonParams) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("portal: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, a.time, a.memory, a.threads, argonKeyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, a.memory, a.time, a.threads,
		enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// Bounds on the parameters a stored hash may ask for, so that a damaged
// users file cannot make a sign-in allocate gigabytes.
const (
	maxArgonMemory = 1 << 20 // KiB: 1 GiB
	maxArgonTime   = 20
	maxArgonLanes  = 16
)

// checkPassword reports whether password matches the PHC-format hash.
func checkPassword(hash, password string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return false, errors.New("portal: password hash is not $argon2id$…")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, fmt.Errorf("portal: password hash version %q, want v=%d", parts[2], argon2.Version)
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false, fmt.Errorf("portal: password hash parameters %q: %w", parts[3], err)
	}
	if m < 8 || m > maxArgonMemory || t < 1 || t > maxArgonTime || p < 1 || p > maxArgonLanes {
		return false, fmt.Errorf("portal: password hash parameters %q out of bounds", parts[3])
	}
	enc := base64.RawStdEncoding
	salt, err := enc.DecodeString(parts[4])
	if err != nil {
		return false, fmt.Errorf("portal: password hash salt: %w", err)
	}
	want, err := enc.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 64 {
		return false, errors.New("portal: password hash: bad key")
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
