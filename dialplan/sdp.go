package dialplan

import (
	"bytes"
	"strconv"
)

// SDPError is an SDP body that cannot be read well enough to decide on its
// media security. Line is the 1-based line number, 0 for the body as a whole.
// Msg is printable US-ASCII (see Decision.Warning).
type SDPError struct {
	Line int
	Msg  string
}

func (e *SDPError) Error() string {
	if e.Line == 0 {
		return e.Msg
	}
	return "line " + strconv.Itoa(e.Line) + ": " + e.Msg
}

// CheckSDP reports whether every media stream that an SDP offer or answer
// makes active is protected by SRTP (or, for non-RTP streams, by DTLS).
// secure is false with a reason (a Warning text naming the first offending
// stream, e.g. "SRTP required: m=audio uses RTP/AVP") when a stream is not;
// err is an *SDPError when the body cannot be read, and then secure is false
// and reason empty. CheckSDP never panics and does not retain sdp.
//
// A stream is active unless its port is 0 without a=bundle-only: port 0
// disables a stream (RFC 3264 section 5.1), but a bundle-only stream with
// port 0 carries media over its BUNDLE group's transport (RFC 9143), so it
// is checked. An SDP with no active stream is secure: it carries no media.
// Direction attributes (a=inactive) do not make a stream inactive here: a
// later UPDATE could enable it without a new key exchange being seen.
//
// An active stream is protected when
//   - its proto is RTP/SAVP or RTP/SAVPF and one of its own a=crypto lines is
//     valid (RFC 4568: a tag, a known suite, inline keys that decode to the
//     suite's key-and-salt length, no session parameter turning protection
//     off). A session-level a=crypto does not count: crypto is a media-level
//     attribute. Best-effort SRTP (RTP/AVP with a=crypto) is refused: its
//     answer may choose plain RTP;
//   - its proto is UDP/TLS/RTP/SAVP(F) or TCP/DTLS/RTP/SAVP(F) (DTLS-SRTP,
//     RFC 5763, RFC 7850), or a DTLS-protected non-RTP proto (UDP/DTLS/SCTP,
//     TCP/DTLS/SCTP, DTLS/SCTP for data channels, UDP/TLS/UDPTL for T.38),
//     and a valid a=fingerprint (sha-1 to sha-512, the digest's length in hex
//     pairs) is present at media or session level.
//
// A stream of a BUNDLE group (a=group:BUNDLE, a=mid) without keying of its
// own takes the keying of the group's tagged stream (the first mid listed),
// provided that stream is active and of the same kind: RFC 9143 lets bundled
// sections omit transport attributes such as a=crypto and a=fingerprint.
//
// Reading is lenient where leniency cannot hide a stream: lines may end in
// LF or CRLF, blank lines are skipped, unknown line types and attributes are
// ignored. It is strict where another parser could see a stream that this
// one does not: the first line must be v=0, every other line `<a-z>=`, no
// line may hold a bare CR, and every m= line is printable US-ASCII of the
// form `media port[/n] proto fmt...` (fields separated by SP or HTAB) with a
// port from 0 to 65535.
func CheckSDP(sdp []byte) (secure bool, reason string, err error) {
	var s sdpScan
	if err := s.scan(sdp); err != nil {
		return false, "", err
	}
	return s.verdict()
}

type protoKind uint8

const (
	protoPlain protoKind = iota
	protoSDES            // RTP/SAVP, RTP/SAVPF: keys in a=crypto
	protoDTLS            // keys from a DTLS handshake bound to a=fingerprint
)

// protoKindOf classifies an m= line's proto, case-insensitively.
func protoKindOf(proto []byte) protoKind {
	for _, p := range [...]string{"RTP/SAVP", "RTP/SAVPF"} {
		if bytes.EqualFold(proto, []byte(p)) {
			return protoSDES
		}
	}
	for _, p := range [...]string{
		"UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF", "TCP/DTLS/RTP/SAVP", "TCP/DTLS/RTP/SAVPF",
		"UDP/DTLS/SCTP", "TCP/DTLS/SCTP", "DTLS/SCTP", "UDP/TLS/UDPTL",
	} {
		if bytes.EqualFold(proto, []byte(p)) {
			return protoDTLS
		}
	}
	return protoPlain
}

// mediaSection is what the verdict needs of one m= section; its slices
// point into the scanned body.
type mediaSection struct {
	line        int
	media       []byte
	proto       []byte
	kind        protoKind
	port        int
	bundleOnly  bool
	mid         []byte
	sawCrypto   bool
	cryptoOK    bool
	crypto      cryptoProblem // the first problem, while no line is valid
	fingerprint bool          // a valid media-level a=fingerprint
}

func (m *mediaSection) active() bool { return m.port != 0 || m.bundleOnly }

// inlineSections is how many m= sections are kept without allocating.
const inlineSections = 16

// maxBundleGroups bounds the a=group:BUNDLE lines remembered; a stream of a
// further group inherits nothing (fail closed).
const maxBundleGroups = 4

type sdpScan struct {
	inline             [inlineSections]mediaSection
	more               []mediaSection // sections past the inline ones
	n                  int            // sections seen
	sessionFingerprint bool
	bundles            [maxBundleGroups][]byte // mids of each a=group:BUNDLE
	nbundles           int
}

func (s *sdpScan) scan(sdp []byte) error {
	first := true
	for n, rest := 0, sdp; len(rest) > 0; {
		var line []byte
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			line, rest = rest, nil
		}
		n++
		line = trimLineEnd(line)
		if len(line) == 0 {
			continue
		}
		if bytes.IndexByte(line, '\r') >= 0 {
			// A parser that ends lines at a bare CR would see a line we do not.
			return &SDPError{Line: n, Msg: "bare CR inside a line"}
		}
		if first {
			if !bytes.Equal(line, []byte("v=0")) {
				return &SDPError{Line: n, Msg: "SDP must start with v=0"}
			}
			first = false
			continue
		}
		if len(line) < 2 || line[1] != '=' || line[0] < 'a' || line[0] > 'z' {
			return &SDPError{Line: n, Msg: "not an SDP line: " + printable(line)}
		}
		switch line[0] {
		case 'm':
			if err := s.media(n, line[2:]); err != nil {
				return err
			}
		case 'a':
			s.attribute(line[2:])
		}
	}
	if first {
		return &SDPError{Msg: "empty SDP"}
	}
	return nil
}

// trimLineEnd drops trailing CR, spaces and tabs.
func trimLineEnd(b []byte) []byte {
	i := len(b)
	for i > 0 && (b[i-1] == '\r' || b[i-1] == ' ' || b[i-1] == '\t') {
		i--
	}
	return b[:i]
}

// media opens the section of an m= line: `media SP port[/count] SP proto
// 1*(SP fmt)`.
func (s *sdpScan) media(n int, v []byte) error {
	for _, c := range v {
		// Only SP and HTAB may separate fields: a parser that also splits at
		// other control or non-ASCII bytes would read another port or proto.
		if (c < 0x21 && c != ' ' && c != '\t') || c > 0x7e {
			return &SDPError{Line: n, Msg: "m= line with a control or non-ASCII byte"}
		}
	}
	media, v := nextField(v)
	port, v := nextField(v)
	proto, v := nextField(v)
	fmt1, _ := nextField(v)
	if len(fmt1) == 0 {
		return &SDPError{Line: n, Msg: "m= line needs media, port, proto and a format"}
	}
	if i := bytes.IndexByte(port, '/'); i >= 0 {
		count := port[i+1:]
		port = port[:i]
		if len(count) == 0 || len(count) > 5 || !allDigits(count) {
			return &SDPError{Line: n, Msg: "m= line has a bad port count"}
		}
	}
	p := 0
	if len(port) == 0 || len(port) > 5 || !allDigits(port) {
		return &SDPError{Line: n, Msg: "m= line has a bad port"}
	}
	for _, c := range port {
		p = p*10 + int(c-'0')
	}
	if p > 65535 {
		return &SDPError{Line: n, Msg: "m= line port above 65535"}
	}
	m := mediaSection{line: n, media: media, proto: proto, kind: protoKindOf(proto), port: p}
	if s.n < inlineSections {
		s.inline[s.n] = m
	} else {
		s.more = append(s.more, m)
	}
	s.n++
	return nil
}

// section returns the i-th m= section, 0-based.
func (s *sdpScan) section(i int) *mediaSection {
	if i < inlineSections {
		return &s.inline[i]
	}
	return &s.more[i-inlineSections]
}

// attribute records the attributes the verdict needs: a=crypto,
// a=fingerprint, a=mid, a=bundle-only in a media section, a=fingerprint and
// a=group:BUNDLE at session level.
func (s *sdpScan) attribute(v []byte) {
	name, value := v, []byte(nil)
	if i := bytes.IndexByte(v, ':'); i >= 0 {
		name, value = v[:i], v[i+1:]
	}
	if s.n == 0 {
		switch string(name) {
		case "fingerprint":
			s.sessionFingerprint = s.sessionFingerprint || validFingerprint(value)
		case "group":
			sem, mids := nextField(value)
			if string(sem) == "BUNDLE" && s.nbundles < maxBundleGroups {
				s.bundles[s.nbundles] = mids
				s.nbundles++
			}
		}
		return
	}
	m := s.section(s.n - 1)
	switch string(name) {
	case "crypto":
		if m.cryptoOK {
			return
		}
		pr := checkCrypto(value)
		if pr.kind == cryptoOK {
			m.cryptoOK = true
		} else if !m.sawCrypto {
			m.crypto = pr
		}
		m.sawCrypto = true
	case "fingerprint":
		m.fingerprint = m.fingerprint || validFingerprint(value)
	case "mid":
		m.mid = bytes.TrimSpace(value)
	case "bundle-only":
		m.bundleOnly = true
	}
}

// verdict decides once every section is known: the first active section
// that is not protected names the reason.
func (s *sdpScan) verdict() (bool, string, error) {
	for i := 0; i < s.n; i++ {
		m := s.section(i)
		if !m.active() || s.keyed(m) {
			continue
		}
		if t := s.tagged(m); t != nil && t.kind == m.kind && s.keyed(t) {
			continue
		}
		return false, s.why(m), nil
	}
	return true, "", nil
}

// keyed reports whether m carries valid keying of its own kind.
func (s *sdpScan) keyed(m *mediaSection) bool {
	switch m.kind {
	case protoSDES:
		return m.cryptoOK
	case protoDTLS:
		return m.fingerprint || s.sessionFingerprint
	}
	return false
}

// tagged returns the active tagged section of the BUNDLE group that m
// belongs to, nil when m is in no group, is the tagged section itself, or
// the tagged section is missing or inactive.
func (s *sdpScan) tagged(m *mediaSection) *mediaSection {
	if len(m.mid) == 0 {
		return nil
	}
	for _, mids := range s.bundles[:s.nbundles] {
		if !hasField(mids, m.mid) {
			continue
		}
		tag, _ := nextField(mids)
		if bytes.Equal(tag, m.mid) {
			return nil
		}
		for i := 0; i < s.n; i++ {
			if t := s.section(i); bytes.Equal(t.mid, tag) && t.active() {
				return t
			}
		}
		return nil
	}
	return nil
}

// hasField reports whether one of the space-separated fields of list is f.
func hasField(list, f []byte) bool {
	for {
		var g []byte
		if g, list = nextField(list); len(g) == 0 {
			return false
		}
		if bytes.Equal(g, f) {
			return true
		}
	}
}

// why words the refusal of an unprotected active section.
func (s *sdpScan) why(m *mediaSection) string {
	at := "SRTP required: m=" + printable(m.media)
	switch m.kind {
	case protoSDES:
		if !m.sawCrypto {
			return at + " (" + printable(m.proto) + ") has no a=crypto"
		}
		return at + " a=crypto: " + m.crypto.String()
	case protoDTLS:
		return at + " (" + printable(m.proto) + ") has no valid a=fingerprint"
	}
	return at + " uses " + printable(m.proto)
}
