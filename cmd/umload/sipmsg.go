package main

import (
	"bytes"
	"errors"
	"strconv"
)

// message is a parsed SIP message: only what a load generator and a
// test UAS need, as slices into the frame it was parsed from. A message is
// reused from one frame to the next (parse resets it), so callers copy
// what they keep beyond the next parse.
type message struct {
	request bool
	method  []byte // request method
	ruri    []byte // request URI
	code    int    // response status code
	reason  []byte

	callID     []byte
	cseq       uint32
	cseqMethod []byte
	from       []byte // header value
	to         []byte // header value
	toTag      []byte
	// vias are the Via header values in order (a value may hold several
	// comma-separated entries); topBranch is the branch of the first.
	vias      [][]byte
	topBranch []byte
	// recordRoutes are the Record-Route entries in order, one per element
	// (comma-separated values are split).
	recordRoutes [][]byte
	contact      []byte // URI of the first Contact entry, without <>
	body         []byte

	folded []byte // scratch for folded header lines
}

var errMalformed = errors.New("malformed SIP message")

// parse fills m from a complete message (start line, headers, empty line,
// body). It accepts CRLF line ends and header folding; compact header
// names are understood.
func (m *message) parse(b []byte) error {
	*m = message{vias: m.vias[:0], recordRoutes: m.recordRoutes[:0], folded: m.folded[:0]}
	end := bytes.Index(b, crlfcrlf)
	if end < 0 {
		return errMalformed
	}
	m.body = b[end+4:]
	head := b[:end+2] // keep the CRLF of the last header line
	nl := bytes.Index(head, crlf)
	if nl < 0 {
		return errMalformed
	}
	if err := m.parseStartLine(head[:nl]); err != nil {
		return err
	}
	rest := head[nl+2:]
	for len(rest) > 0 {
		nl = bytes.Index(rest, crlf)
		if nl < 0 {
			return errMalformed
		}
		line := rest[:nl]
		rest = rest[nl+2:]
		// Folding (RFC 3261 §7.3.1): continuation lines start with SP or HT.
		if len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			start := len(m.folded)
			m.folded = append(m.folded, line...)
			for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
				nl = bytes.Index(rest, crlf)
				if nl < 0 {
					return errMalformed
				}
				m.folded = append(m.folded, ' ')
				m.folded = append(m.folded, bytes.TrimLeft(rest[:nl], " \t")...)
				rest = rest[nl+2:]
			}
			line = m.folded[start:len(m.folded):len(m.folded)]
		}
		if err := m.header(line); err != nil {
			return err
		}
	}
	if m.callID == nil || m.cseqMethod == nil || len(m.vias) == 0 {
		return errMalformed
	}
	return nil
}

func (m *message) parseStartLine(line []byte) error {
	if bytes.HasPrefix(line, sipVersion) {
		// SIP/2.0 200 OK
		rest := line[len(sipVersion):]
		if len(rest) < 3 || (len(rest) > 3 && rest[3] != ' ') {
			return errMalformed
		}
		code := 0
		for _, d := range rest[:3] {
			if d < '0' || d > '9' {
				return errMalformed
			}
			code = code*10 + int(d-'0')
		}
		if code < 100 || code > 699 {
			return errMalformed
		}
		m.code = code
		if len(rest) > 4 {
			m.reason = rest[4:]
		}
		return nil
	}
	// METHOD URI SIP/2.0
	sp := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp <= 0 || sp2 <= sp || !bytes.Equal(line[sp2+1:], sipVersion[:len(sipVersion)-1]) {
		return errMalformed
	}
	m.request = true
	m.method = line[:sp]
	m.ruri = line[sp+1 : sp2]
	return nil
}

// header records one header line.
func (m *message) header(line []byte) error {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return errMalformed
	}
	name := bytes.TrimRight(line[:colon], " \t")
	value := bytes.Trim(line[colon+1:], " \t")
	switch {
	case isName(name, "Via", "v"):
		if len(m.vias) == 0 {
			m.topBranch = param(firstEntry(value), "branch")
		}
		m.vias = append(m.vias, value)
	case isName(name, "Call-ID", "i"):
		m.callID = value
	case isName(name, "CSeq", ""):
		sp := bytes.IndexByte(value, ' ')
		if sp <= 0 {
			return errMalformed
		}
		n, err := strconv.ParseUint(string(value[:sp]), 10, 32)
		if err != nil {
			return errMalformed
		}
		m.cseq = uint32(n)
		m.cseqMethod = bytes.TrimLeft(value[sp+1:], " ")
	case isName(name, "From", "f"):
		m.from = value
	case isName(name, "To", "t"):
		m.to = value
		m.toTag = param(afterURI(value), "tag")
	case isName(name, "Record-Route", ""):
		m.recordRoutes = splitList(value, m.recordRoutes)
	case isName(name, "Contact", "m"):
		if m.contact == nil {
			m.contact = uriOf(firstEntry(value))
		}
	}
	return nil
}

var (
	crlf       = []byte("\r\n")
	crlfcrlf   = []byte("\r\n\r\n")
	sipVersion = []byte("SIP/2.0 ")
)

func isName(name []byte, long, compact string) bool {
	if len(name) == len(long) {
		return bytes.EqualFold(name, []byte(long))
	}
	return compact != "" && len(name) == 1 && (name[0]|0x20) == compact[0]
}

// splitList appends the comma-separated entries of a header value to dst,
// ignoring commas inside <...> and quoted strings.
func splitList(v []byte, dst [][]byte) [][]byte {
	start, angle, quote := 0, false, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quote:
			if c == '\\' {
				i++
			} else if c == '"' {
				quote = false
			}
		case c == '"':
			quote = true
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ',' && !angle:
			if e := bytes.Trim(v[start:i], " \t"); len(e) > 0 {
				dst = append(dst, e)
			}
			start = i + 1
		}
	}
	if e := bytes.Trim(v[start:], " \t"); len(e) > 0 {
		dst = append(dst, e)
	}
	return dst
}

// firstEntry returns the first comma-separated entry of a header value.
func firstEntry(v []byte) []byte {
	var one [1][]byte
	if l := splitList(v, one[:0]); len(l) > 0 {
		return l[0]
	}
	return v
}

// uriOf returns the URI of a name-addr (<...>) or addr-spec entry.
func uriOf(e []byte) []byte {
	if i := bytes.IndexByte(e, '<'); i >= 0 {
		if j := bytes.IndexByte(e[i:], '>'); j > 0 {
			return e[i+1 : i+j]
		}
		return nil
	}
	if i := bytes.IndexByte(e, ';'); i >= 0 {
		return bytes.TrimRight(e[:i], " ")
	}
	return e
}

// afterURI returns the header parameters of a name-addr or addr-spec
// (what follows '>' or, without <>, the URI).
func afterURI(e []byte) []byte {
	if i := bytes.IndexByte(e, '>'); i >= 0 {
		return e[i+1:]
	}
	if i := bytes.IndexByte(e, ';'); i >= 0 {
		return e[i:]
	}
	return nil
}

// param returns the value of ;name=value in params ("" name match is
// case-insensitive), or nil.
func param(params []byte, name string) []byte {
	for len(params) > 0 {
		i := bytes.IndexByte(params, ';')
		if i < 0 {
			return nil
		}
		params = params[i+1:]
		end := bytes.IndexAny(params, ";, ")
		p := params
		if end >= 0 {
			p = params[:end]
		}
		if eq := bytes.IndexByte(p, '='); eq > 0 && bytes.EqualFold(bytes.TrimSpace(p[:eq]), []byte(name)) {
			return bytes.TrimSpace(p[eq+1:])
		}
	}
	return nil
}

// routeSet is what a UAC derives from a 2xx to its INVITE (RFC 3261
// §12.1.2 and §12.2.1.1): the Request-URI and Route headers of in-dialog
// requests.
type routeSet struct {
	target string   // Request-URI
	routes []string // Route entries, in order
}

// dialogRoute computes the route set from the response's Record-Route
// entries (reversed) and its Contact URI. With a strict router first (no
// ;lr), the Request-URI is that router and the remote target goes last.
func dialogRoute(recordRoutes [][]byte, contact []byte) routeSet {
	rs := routeSet{target: string(contact)}
	for i := len(recordRoutes) - 1; i >= 0; i-- {
		rs.routes = append(rs.routes, string(recordRoutes[i]))
	}
	if len(rs.routes) > 0 && !looseRouter(rs.routes[0]) {
		first := string(uriOf([]byte(rs.routes[0])))
		rs.routes = append(rs.routes[1:], "<"+rs.target+">")
		rs.target = first
	}
	return rs
}

// looseRouter reports whether a Route entry's URI carries ;lr.
func looseRouter(entry string) bool {
	u := uriOf([]byte(entry))
	for _, p := range bytes.Split(u, []byte(";"))[1:] {
		if eq := bytes.IndexByte(p, '='); eq >= 0 {
			p = p[:eq]
		}
		if bytes.EqualFold(bytes.TrimSpace(p), []byte("lr")) {
			return true
		}
	}
	return false
}

// appendRoute writes the route set as one comma-separated Route header
// (or one Route header per entry with lines), or nothing; RFC 3261 §7.3.1
// makes both forms equivalent.
func appendRoute(b []byte, routes []string, lines bool) []byte {
	if len(routes) == 0 {
		return b
	}
	if lines {
		for _, r := range routes {
			b = appendHeader(b, "Route", []byte(r))
		}
		return b
	}
	b = append(b, "Route: "...)
	for i, r := range routes {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, r...)
	}
	return append(b, "\r\n"...)
}

// appendHeader writes "Name: value\r\n".
func appendHeader(b []byte, name string, value []byte) []byte {
	b = append(b, name...)
	b = append(b, ": "...)
	b = append(b, value...)
	return append(b, "\r\n"...)
}

// appendResponse writes a response to the request m (RFC 3261 §8.2.6):
// Via, From, Call-ID and CSeq copied, To copied with toTag added when it
// has none; Record-Route copied when copyRR (18x/2xx to INVITE); then
// extra header lines (each ending in CRLF) and the body.
func appendResponse(b []byte, m *message, code int, reason string, toTag string, copyRR bool, extra string, contentType string, body []byte) []byte {
	b = append(b, "SIP/2.0 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, reason...)
	b = append(b, "\r\n"...)
	for _, v := range m.vias {
		b = appendHeader(b, "Via", v)
	}
	if copyRR {
		for _, r := range m.recordRoutes {
			b = appendHeader(b, "Record-Route", r)
		}
	}
	b = appendHeader(b, "From", m.from)
	b = append(b, "To: "...)
	b = append(b, m.to...)
	if m.toTag == nil && toTag != "" && code > 100 {
		b = append(b, ";tag="...)
		b = append(b, toTag...)
	}
	b = append(b, "\r\n"...)
	b = appendHeader(b, "Call-ID", m.callID)
	b = append(b, "CSeq: "...)
	b = strconv.AppendUint(b, uint64(m.cseq), 10)
	b = append(b, ' ')
	b = append(b, m.cseqMethod...)
	b = append(b, "\r\n"...)
	b = append(b, extra...)
	if len(body) > 0 {
		b = append(b, "Content-Type: "...)
		b = append(b, contentType...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// requestParams are the parts of a request that umload fills in.
type requestParams struct {
	method  string
	ruri    string
	via     string // Via value: "SIP/2.0/TLS host:port;branch=...;rport"
	from    string // From value, with tag
	to      string // To value (with tag in dialog)
	callID  string
	cseq    uint32
	contact string // Contact value, or ""
	routes  []string
	// routeLines writes one Route header per entry instead of one
	// comma-separated Route header.
	routeLines bool
	body       []byte // with Content-Type application/sdp when not empty
}

// appendRequest writes a request.
func appendRequest(b []byte, p *requestParams) []byte {
	b = append(b, p.method...)
	b = append(b, ' ')
	b = append(b, p.ruri...)
	b = append(b, " SIP/2.0\r\nVia: "...)
	b = append(b, p.via...)
	b = append(b, "\r\nMax-Forwards: 70\r\n"...)
	b = appendRoute(b, p.routes, p.routeLines)
	b = append(b, "From: "...)
	b = append(b, p.from...)
	b = append(b, "\r\nTo: "...)
	b = append(b, p.to...)
	b = append(b, "\r\nCall-ID: "...)
	b = append(b, p.callID...)
	b = append(b, "\r\nCSeq: "...)
	b = strconv.AppendUint(b, uint64(p.cseq), 10)
	b = append(b, ' ')
	b = append(b, p.method...)
	b = append(b, "\r\n"...)
	if p.contact != "" {
		b = append(b, "Contact: "...)
		b = append(b, p.contact...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "User-Agent: umload\r\n"...)
	if len(p.body) > 0 {
		b = append(b, "Content-Type: application/sdp\r\n"...)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(p.body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, p.body...)
}

// sdpOffer returns an audio offer from host: plain RTP/AVP, or RTP/SAVP
// with an SDES a=crypto line (what a secured dial plan requires).
func sdpOffer(host string, srtp bool) []byte {
	proto, crypto := "RTP/AVP", ""
	if srtp {
		proto = "RTP/SAVP"
		crypto = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32\r\n"
	}
	return []byte("v=0\r\n" +
		"o=umload 1 1 IN IP4 " + host + "\r\n" +
		"s=-\r\n" +
		"c=IN IP4 " + host + "\r\n" +
		"t=0 0\r\n" +
		"m=audio 40000 " + proto + " 0 8 101\r\n" +
		"a=rtpmap:0 PCMU/8000\r\n" +
		"a=rtpmap:8 PCMA/8000\r\n" +
		"a=rtpmap:101 telephone-event/8000\r\n" +
		crypto +
		"a=sendrecv\r\n")
}

// sdpAnswer is the UAS's answer: plain RTP, or SRTP when the offer was SAVP.
func sdpAnswer(host string, offer []byte) []byte {
	return sdpOffer(host, bytes.Contains(offer, []byte("RTP/SAVP")))
}
