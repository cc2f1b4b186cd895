package dialplan

import (
	"strconv"
	"strings"
)

// maxE164Digits is the longest international number ITU-T E.164 allows.
const maxE164Digits = 15

// CheckURI decides whether a Request-URI with this user part and host is a
// valid address in the plan, answering as RFC 3261 intends: 484 Address
// Incomplete when the user part is a proper prefix of a valid address (the
// caller may dial on, RFC 3261 section 21.4.22), 404 Not Found when no
// continuation could make it valid.
//
// user is taken as it appears in the URI. Its number is the text before the
// first ';' (tel parameters such as ";phone-context=" or ";isub=" are not
// part of it), and RFC 3966 visual separators ('-', '.', '(', ')') in a
// number are ignored. A percent-escape is not a digit.
//
//   - telephone-extension (also an empty URIType): digits only. Exactly
//     NumberOfDigits is valid; fewer is 484; more, or any other character,
//     is 404. With NumberOfDigits 0 any non-empty run of digits is valid.
//     An empty user part (nothing dialed) is 404, not 484.
//   - e164: '+' then 1 to 15 digits. '+' alone is 484; no leading '+', a
//     non-digit, or more than 15 digits is 404.
//   - sip-uri: a non-empty user and a non-empty host (user@host), else 404;
//     the user is not read as a number.
//
// A plan with an unknown URIType refuses every URI with 404.
func (p Plan) CheckURI(user, host string) Decision {
	switch p.uriType() {
	case TelephoneExtension:
		return p.checkExtension(user)
	case E164:
		return checkE164(user)
	case SIPURI:
		if user == "" || host == "" {
			return refuse(404, ReasonURIInvalid, "Request-URI must be user@host")
		}
		return allowed
	}
	return refuse(404, ReasonURIInvalid, "dial plan has an unknown uri_type")
}

func (p Plan) checkExtension(user string) Decision {
	digits, ok := countDigits(numberPart(user))
	want := p.NumberOfDigits
	switch {
	case !ok || digits == 0 || (want > 0 && digits > want):
		if want > 0 {
			return refuse(404, ReasonURIInvalid, "not a "+strconv.Itoa(want)+"-digit extension")
		}
		return refuse(404, ReasonURIInvalid, "not an extension number")
	case want > 0 && digits < want:
		return refuse(484, ReasonURIIncomplete, "extension incomplete: "+strconv.Itoa(want)+" digits expected")
	}
	return allowed
}

func checkE164(user string) Decision {
	n := numberPart(user)
	if !strings.HasPrefix(n, "+") {
		return refuse(404, ReasonURIInvalid, "not an E.164 number (+ and up to 15 digits)")
	}
	digits, ok := countDigits(n[1:])
	switch {
	case !ok || digits > maxE164Digits:
		return refuse(404, ReasonURIInvalid, "not an E.164 number (+ and up to 15 digits)")
	case digits == 0:
		return refuse(484, ReasonURIIncomplete, "E.164 number incomplete")
	}
	return allowed
}

// numberPart returns user up to its first ';'.
func numberPart(user string) string {
	if i := strings.IndexByte(user, ';'); i >= 0 {
		return user[:i]
	}
	return user
}

// countDigits counts the digits of s, skipping visual separators; ok is
// false when s holds any other character.
func countDigits(s string) (digits int, ok bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case isVisualSeparator(c):
		default:
			return digits, false
		}
	}
	return digits, true
}

// isVisualSeparator reports RFC 3966's visual-separator characters.
func isVisualSeparator(c byte) bool {
	return c == '-' || c == '.' || c == '(' || c == ')'
}
