package dialplan

import (
	"bytes"
	"encoding/base64"
	"strconv"
)

// SDES crypto suites (RFC 4568, RFC 6188, RFC 7714) and the length in bytes
// of the master key and salt that their inline key carries.
var cryptoSuites = [...]struct {
	name    string
	keySalt int
}{
	{"AES_CM_128_HMAC_SHA1_80", 30},
	{"AES_CM_128_HMAC_SHA1_32", 30},
	{"F8_128_HMAC_SHA1_80", 30},
	{"AES_192_CM_HMAC_SHA1_80", 38},
	{"AES_192_CM_HMAC_SHA1_32", 38},
	{"AES_256_CM_HMAC_SHA1_80", 46},
	{"AES_256_CM_HMAC_SHA1_32", 46},
	{"AEAD_AES_128_GCM", 28},
	{"AEAD_AES_256_GCM", 44},
}

// keySaltLen returns the key-and-salt length of a known suite, 0 otherwise.
// Suite names are ABNF literals, hence case-insensitive.
func keySaltLen(suite []byte) int {
	for _, s := range cryptoSuites {
		if len(s.name) == len(suite) && bytes.EqualFold(suite, []byte(s.name)) {
			return s.keySalt
		}
	}
	return 0
}

// cryptoProblem says why an a=crypto line does not count. Its text is
// built only when a refusal needs it.
type cryptoProblem struct {
	kind      uint8
	token     []byte // the suite or session parameter at fault
	got, want int    // decoded key length and the suite's
}

const (
	cryptoOK uint8 = iota
	cryptoMalformed
	cryptoUnknownSuite
	cryptoNotInline
	cryptoBadBase64
	cryptoBadKeyLength
	cryptoBadKeyParam
	cryptoWeakened
)

func (c cryptoProblem) String() string {
	switch c.kind {
	case cryptoUnknownSuite:
		return "unknown suite " + printable(c.token)
	case cryptoNotInline:
		return "key method is not inline"
	case cryptoBadBase64:
		return "inline key is not base64"
	case cryptoBadKeyLength:
		return "key is " + strconv.Itoa(c.got) + " bytes, " + printable(c.token) + " needs " + strconv.Itoa(c.want)
	case cryptoBadKeyParam:
		return "bad lifetime or MKI"
	case cryptoWeakened:
		return printable(c.token) + " turns protection off"
	}
	return "malformed line"
}

// checkCrypto validates the value of an a=crypto attribute (after
// "crypto:"): `tag SP suite SP key-params *(SP session-param)` (RFC 4568
// section 9.1), where every key-param is `inline:key||salt[|lifetime][|MKI:len]`
// and the key decodes from base64 to exactly the suite's length. A line that
// asks for UNENCRYPTED_SRTP, UNENCRYPTED_SRTCP or UNAUTHENTICATED_SRTP does
// not count: it turns part of the protection off.
func checkCrypto(v []byte) cryptoProblem {
	tag, v := nextField(v)
	suite, v := nextField(v)
	keys, v := nextField(v)
	if len(tag) == 0 || len(tag) > 9 || !allDigits(tag) || len(keys) == 0 {
		return cryptoProblem{kind: cryptoMalformed}
	}
	want := keySaltLen(suite)
	if want == 0 {
		return cryptoProblem{kind: cryptoUnknownSuite, token: suite}
	}
	for len(keys) > 0 {
		var key []byte
		if i := bytes.IndexByte(keys, ';'); i >= 0 {
			key, keys = keys[:i], keys[i+1:]
		} else {
			key, keys = keys, nil
		}
		if pr := checkInlineKey(key, suite, want); pr.kind != cryptoOK {
			return pr
		}
	}
	for {
		var param []byte
		if param, v = nextField(v); len(param) == 0 {
			return cryptoProblem{}
		}
		if bytes.Equal(param, []byte("UNENCRYPTED_SRTP")) || bytes.Equal(param, []byte("UNENCRYPTED_SRTCP")) ||
			bytes.Equal(param, []byte("UNAUTHENTICATED_SRTP")) {
			return cryptoProblem{kind: cryptoWeakened, token: param}
		}
	}
}

// checkInlineKey validates one `inline:key||salt[|lifetime][|MKI:length]`.
func checkInlineKey(kp, suite []byte, want int) cryptoProblem {
	const method = "inline:"
	if len(kp) < len(method) || !bytes.EqualFold(kp[:len(method)], []byte(method)) {
		return cryptoProblem{kind: cryptoNotInline}
	}
	kp = kp[len(method):]
	key := kp
	if i := bytes.IndexByte(kp, '|'); i >= 0 {
		key, kp = kp[:i], kp[i+1:]
		if !validKeyParams(kp) {
			return cryptoProblem{kind: cryptoBadKeyParam}
		}
	}
	got, ok := decodedLen(key)
	if !ok {
		return cryptoProblem{kind: cryptoBadBase64}
	}
	if got != want {
		return cryptoProblem{kind: cryptoBadKeyLength, token: suite, got: got, want: want}
	}
	return cryptoProblem{}
}

// validKeyParams checks what follows the key: `lifetime`, `MKI:length`, or
// `lifetime|MKI:length`; lifetime is decimal or "2^" decimal.
func validKeyParams(p []byte) bool {
	first, second := p, []byte(nil)
	if i := bytes.IndexByte(p, '|'); i >= 0 {
		first, second = p[:i], p[i+1:]
		return validLifetime(first) && validMKI(second)
	}
	return validLifetime(first) || validMKI(first)
}

func validLifetime(b []byte) bool {
	if bytes.HasPrefix(b, []byte("2^")) {
		b = b[2:]
	}
	return len(b) > 0 && len(b) <= 20 && allDigits(b)
}

func validMKI(b []byte) bool {
	i := bytes.IndexByte(b, ':')
	if i <= 0 || i == len(b)-1 {
		return false
	}
	v, l := b[:i], b[i+1:]
	return len(v) <= 20 && allDigits(v) && len(l) <= 3 && allDigits(l)
}

// maxKeyB64 bounds the base64 key text that is decoded (the longest suite
// key, 46 bytes, is 64 characters).
const maxKeyB64 = 88

// decodedLen decodes key, padded or not, into a stack buffer and returns
// its length; ok is false when key is not base64. A key longer than any
// suite's is not decoded: its characters are checked and its length
// computed, which is enough to refuse it.
func decodedLen(key []byte) (n int, ok bool) {
	if len(key) == 0 {
		return 0, false
	}
	for _, c := range key {
		if c == '\r' || c == '\n' {
			return 0, false // the decoder would skip them
		}
	}
	if len(key) > maxKeyB64 {
		raw := bytes.TrimRight(key, "=")
		if len(key)-len(raw) > 2 || len(raw)%4 == 1 {
			return 0, false
		}
		for _, c := range raw {
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/') {
				return 0, false
			}
		}
		return len(raw) * 6 / 8, true
	}
	enc := base64.RawStdEncoding
	if key[len(key)-1] == '=' {
		enc = base64.StdEncoding
	}
	var buf [maxKeyB64]byte
	n, err := enc.Decode(buf[:], key)
	return n, err == nil
}

// Hash functions of a=fingerprint (RFC 8122) and their digest sizes. MD2
// and MD5 are absent on purpose: RFC 8122 forbids them.
var fingerprintHashes = [...]struct {
	name string
	size int
}{
	{"sha-1", 20},
	{"sha-224", 28},
	{"sha-256", 32},
	{"sha-384", 48},
	{"sha-512", 64},
}

// validFingerprint validates the value of an a=fingerprint attribute (after
// "fingerprint:"): a known hash function, case-insensitive, then exactly
// its digest size in colon-separated pairs of hex digits.
func validFingerprint(v []byte) bool {
	hash, v := nextField(v)
	fp, rest := nextField(v)
	if len(fp) == 0 || len(bytes.TrimSpace(rest)) > 0 {
		return false
	}
	size := 0
	for _, h := range fingerprintHashes {
		if bytes.EqualFold(hash, []byte(h.name)) {
			size = h.size
			break
		}
	}
	if size == 0 || len(fp) != 3*size-1 {
		return false
	}
	for i := 0; i < len(fp); i++ {
		if i%3 == 2 {
			if fp[i] != ':' {
				return false
			}
		} else if !isHex(fp[i]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// nextField returns the first space-separated field of b and what follows
// it. Runs of spaces and tabs separate fields.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	j := i
	for j < len(b) && b[j] != ' ' && b[j] != '\t' {
		j++
	}
	return b[i:j], b[j:]
}

// printable returns b for a Warning text or a log: at most 40 bytes, every
// byte outside printable US-ASCII, and '"' and '\', replaced by '?'.
func printable(b []byte) string {
	const max = 40
	trunc := len(b) > max
	if trunc {
		b = b[:max]
	}
	out := make([]byte, len(b), len(b)+3)
	for i, c := range b {
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			c = '?'
		}
		out[i] = c
	}
	if trunc {
		out = append(out, "..."...)
	}
	return string(out)
}
