package policy

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxOperatorContact bounds Policy.OperatorContact, in bytes.
const MaxOperatorContact = 200

// checkOperatorContact reports whether s can be the operator contact: empty
// (none), or 1 to MaxOperatorContact bytes of valid UTF-8 with no control
// characters, no invisible format characters (bidirectional overrides,
// which could make it read as another contact) and no surrounding spaces.
// It is free text (an address, a web
// page, a telephone number): the transparency page shows it as text and
// links it only when it is an https URL or an e-mail address.
func checkOperatorContact(s string) error {
	switch {
	case s == "":
		return nil
	case len(s) > MaxOperatorContact:
		return invalidf("operator_contact is %d bytes, limit %d", len(s), MaxOperatorContact)
	case !utf8.ValidString(s):
		return invalidf("operator_contact is not valid UTF-8")
	case strings.TrimSpace(s) != s || strings.ContainsFunc(s, invisible):
		return invalidf("operator_contact %q: no control or format characters and no surrounding spaces", s)
	}
	return nil
}

// invisible reports whether r is a control or format character, or a line
// or paragraph separator.
func invisible(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}
