package proxy

import (
	"bytes"
	"strconv"
)

// The forwarding fast path edits the bytes of a message instead of cloning
// sipgo's model and serialising it again (DESIGN.md: clone-and-reserialise
// cost the naive proxies a third of their CPU). It handles the common
// shapes; anything unusual (folded lines, several values in one Via or
// Route line) makes it report false, and the caller serialises the parsed
// message instead, which is always correct.

// headerLine is one header line of a message: raw[start:end] includes its
// CRLF; the name is raw[start:nameEnd] and the value starts at valueStart.
// kind says which of the headers umrouter reads it is, decided once.
type headerLine struct {
	start, nameEnd, valueStart, end int
	kind                            headerKind
}

// headerKind names the headers the byte-reading paths look at.
type headerKind uint8

const (
	hOther headerKind = iota
	hVia
	hFrom
	hTo
	hCallID
	hCSeq
	hContact
	hContentLength
	hContentType
	hMaxForwards
	hRoute
	hProxyRequire
	hRetryAfter
	hTimestamp
)

// classify returns the kind of a header name, long or compact form, in any
// case. It looks at the length first: most names are then compared once.
func classify(n []byte) headerKind {
	is := func(s string) bool { return bytes.EqualFold(n, []byte(s)) }
	switch len(n) {
	case 1:
		switch n[0] | 0x20 {
		case 'v':
			return hVia
		case 'f':
			return hFrom
		case 't':
			return hTo
		case 'i':
			return hCallID
		case 'm':
			return hContact
		case 'l':
			return hContentLength
		case 'c':
			return hContentType
		}
	case 2:
		if is("To") {
			return hTo
		}
	case 3:
		if is("Via") {
			return hVia
		}
	case 4:
		if is("From") {
			return hFrom
		}
		if is("CSeq") {
			return hCSeq
		}
	case 5:
		if is("Route") {
			return hRoute
		}
	case 7:
		if is("Call-ID") {
			return hCallID
		}
		if is("Contact") {
			return hContact
		}
	case 9:
		if is("Timestamp") {
			return hTimestamp
		}
	case 11:
		if is("Retry-After") {
			return hRetryAfter
		}
	case 12:
		if is("Max-Forwards") {
			return hMaxForwards
		}
		if is("Content-Type") {
			return hContentType
		}
	case 13:
		if is("Proxy-Require") {
			return hProxyRequire
		}
	case 14:
		if is("Content-Length") {
			return hContentLength
		}
	}
	return hOther
}

// scanHeaders calls fn for each header line of raw, after the start line, up
// to the empty line. It returns the offset of the body (after the empty
// line) and false when a line is folded or not terminated by CRLF.
func scanHeaders(raw []byte, fn func(h headerLine) bool) (int, bool) {
	i := bytes.Index(raw, crlf)
	if i < 0 {
		return 0, false
	}
	pos := i + 2
	for pos < len(raw) {
		// IndexByte is vectorised; the line ends in CRLF or is refused.
		nl := bytes.IndexByte(raw[pos:], '\n')
		if nl < 1 || raw[pos+nl-1] != '\r' {
			return 0, false
		}
		j := nl - 1 // the CR
		if j == 0 {
			return pos + 2, true // the empty line
		}
		line := raw[pos : pos+j]
		if line[0] == ' ' || line[0] == '\t' {
			return 0, false // folded continuation: leave it to the full parser
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return 0, false
		}
		nameEnd := pos + colon
		for nameEnd > pos && (raw[nameEnd-1] == ' ' || raw[nameEnd-1] == '\t') {
			nameEnd--
		}
		vs := pos + colon + 1
		for vs < pos+j && (raw[vs] == ' ' || raw[vs] == '\t') {
			vs++
		}
		if !fn(headerLine{start: pos, nameEnd: nameEnd, valueStart: vs, end: pos + j + 2, kind: classify(raw[pos:nameEnd])}) {
			return 0, false
		}
		pos += j + 2
	}
	return 0, false
}

var crlf = []byte("\r\n")

// firstComma returns the index of the first comma of v that separates
// values (outside quotes and angle brackets), or -1.
func firstComma(v []byte) int {
	if bytes.IndexByte(v, ',') < 0 {
		return -1 // most values: no comma at all, found vectorised
	}
	quoted, angle := false, false
	for i, c := range v {
		switch {
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ',' && !angle:
			return i
		}
	}
	return -1
}

// dropFirstValue appends to dst the header line h of raw without its first
// value ("Via: a, b" becomes "Via: b"), or nothing when the line held only
// that value.
func dropFirstValue(dst, raw []byte, h headerLine) []byte {
	v := raw[h.valueStart : h.end-2]
	i := firstComma(v)
	if i < 0 {
		return dst
	}
	rest := bytes.TrimLeft(v[i+1:], " \t")
	dst = append(dst, raw[h.start:h.valueStart]...)
	dst = append(dst, rest...)
	return append(dst, crlf...)
}

// cutTopVia returns raw without its first Via value (our own, on a
// response going upstream), appended to dst. A message without
// Content-Length (legal over UDP) is left to the parser, which adds one:
// the next hop may be a stream.
func cutTopVia(dst, raw []byte) ([]byte, bool) {
	cut := headerLine{start: -1}
	sawLength := false
	_, ok := scanHeaders(raw, func(h headerLine) bool {
		if cut.start < 0 && h.kind == hVia {
			cut = h
		}
		if h.kind == hContentLength {
			sawLength = true
		}
		return true
	})
	if !ok || cut.start < 0 || !sawLength {
		return dst, false
	}
	dst = append(dst, raw[:cut.start]...)
	dst = dropFirstValue(dst, raw, cut)
	return append(dst, raw[cut.end:]...), true
}

// forwardBytes appends to dst the request raw as it leaves toward the next
// hop: top lines (our Via, our Record-Route entries) inserted after the
// request line, the first popRoutes Route lines removed (our own, popped
// when routing), Max-Forwards decremented. It returns false when the shape
// is not one it edits (the caller serialises the parsed request instead).
func forwardBytes(dst, raw, top []byte, popRoutes int) ([]byte, bool) {
	first := bytes.Index(raw, crlf)
	if first < 0 {
		return dst, false
	}
	mark := len(dst)
	dst = append(dst, raw[:first+2]...)
	dst = append(dst, top...)
	last := first + 2
	sawMaxForwards, sawLength := false, false
	_, ok := scanHeaders(raw, func(h headerLine) bool {
		switch {
		case h.kind == hContentLength:
			sawLength = true
		case popRoutes > 0 && h.kind == hRoute:
			// Pop values from this line, one per entry of ours; a line
			// may hold several, comma-separated (RFC 3261 section 7.3.1).
			v := raw[h.valueStart : h.end-2]
			for popRoutes > 0 && len(v) > 0 {
				popRoutes--
				i := firstComma(v)
				if i < 0 {
					v = nil
					break
				}
				v = bytes.TrimLeft(v[i+1:], " \t")
			}
			dst = append(dst, raw[last:h.start]...)
			if len(v) > 0 {
				dst = append(dst, raw[h.start:h.valueStart]...)
				dst = append(dst, v...)
				dst = append(dst, crlf...)
			}
			last = h.end
		case h.kind == hMaxForwards:
			n, err := strconv.Atoi(string(bytes.TrimSpace(raw[h.valueStart : h.end-2])))
			if err != nil || n < 1 {
				return false
			}
			dst = append(dst, raw[last:h.valueStart]...)
			dst = strconv.AppendInt(dst, int64(n-1), 10)
			dst = append(dst, crlf...)
			last = h.end
			sawMaxForwards = true
		}
		return true
	})
	if !ok || popRoutes > 0 || !sawMaxForwards || !sawLength {
		return dst[:mark], false
	}
	return append(dst, raw[last:]...), true
}
