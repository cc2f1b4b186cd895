package proxy

import (
	"bytes"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/umrouter/umrouter/dialplan"
)

// The fast paths relay the requests of a call's common course (the new
// call's INVITE, and the ACK and BYE of its dialog, whose Route entries of
// ours say where they go and under which dial plan) from a scan of their
// bytes: sipgo's full parse was the largest cost of a call
// (docs/PERFORMANCE.md). They take only requests that handleRequest would
// relay without a local answer; anything else (a refusal, a loop, a
// retransmission, an odd shape) they leave to handleRequest, which parses
// in full and decides as before. So every refusal stays in one place.
//
// The scan checks the syntax of what routing reads and of the addresses a
// dialog is made of (Request-URI, Via, From, To, Contact, Route, CSeq,
// Max-Forwards, Content-Type and -Length), so that the RFC 4475 messages
// sipgo refuses are refused still; other headers pass through as bytes,
// as in any proxy that does not parse what it does not use.

// inRequest is what the fast paths read from a request.
type inRequest struct {
	method      sip.RequestMethod
	uriUser     []byte
	uriHost     []byte
	uriPort     int
	viaBranch   []byte
	viaHost     []byte
	callID      []byte
	cseqMethod  []byte
	contentType []byte
	body        []byte
	maxForwards int
	toTagged    bool
	routes      [][]byte // Route values, in order, one per entry
	ownVia      bool     // some Via names umrouter's branch prefix
	// The lines a local answer copies (RFC 3261 section 8.2.6.2).
	vias                       []headerLine
	from, to, callIDLine, cseq headerLine
	timestamp                  headerLine // zero when absent
}

// policyRequest is the request as the dial plan sees it.
func (q *inRequest) policyRequest(f flow, inDialog bool) dialplan.Request {
	return dialplan.Request{
		Method: string(q.method), Transport: dialplan.Transport(lower(f.viaTransport())),
		User: string(q.uriUser), Host: string(q.uriHost), ContentType: string(q.contentType), Body: q.body,
		InDialog: inDialog,
	}
}

// scanRequest reads raw as an INVITE, ACK or BYE of the usual shape: a
// lower-case sip/sips Request-URI without headers or escapes, SIP/2.0,
// unfolded lines, each of From, To, Call-ID, CSeq, Max-Forwards and
// Content-Length exactly once, no Proxy-Require. It reports false for
// anything else.
func scanRequest(raw []byte, branchPrefix string) (inRequest, bool) {
	var q inRequest
	line, _, ok := bytes.Cut(raw, crlf)
	if !ok {
		return q, false
	}
	switch {
	case bytes.HasPrefix(line, []byte("ACK ")):
		q.method = sip.ACK
	case bytes.HasPrefix(line, []byte("BYE ")):
		q.method = sip.BYE
	case bytes.HasPrefix(line, []byte("INVITE ")):
		q.method = sip.INVITE
	default:
		return q, false
	}
	uri, ok := bytes.CutSuffix(line[len(q.method)+1:], []byte(" SIP/2.0"))
	if !ok || bytes.ContainsAny(uri, " ?%") {
		return q, false
	}
	if q.uriUser, q.uriHost, q.uriPort, ok = splitSIPURI(uri); !ok {
		return q, false
	}
	var counts [6]int // From, To, Call-ID, CSeq, Max-Forwards, Content-Length
	var length headerLine
	vias := 0
	body, ok := scanHeaders(raw, func(h headerLine) bool {
		v := raw[h.valueStart : h.end-2]
		switch {
		case h.kind == hVia:
			if bytes.Contains(v, []byte(branchPrefix)) {
				q.ownVia = true
			}
			if !wellFormedVias(v) {
				return false
			}
			q.vias = append(q.vias, h)
			if vias == 0 {
				top := v
				if i := firstComma(top); i >= 0 {
					top = top[:i]
				}
				q.viaBranch, _ = viaParam(top, "branch")
				q.viaHost = viaSentByHost(top)
			}
			vias++
		case h.kind == hFrom:
			counts[0]++
			q.from = h
			if !wellFormedAddress(v) {
				return false
			}
		case h.kind == hTo:
			counts[1]++
			q.to = h
			if !wellFormedAddress(v) {
				return false
			}
			q.toTagged = hasTag(v)
		case h.kind == hCallID:
			counts[2]++
			q.callIDLine = h
			q.callID = bytes.TrimSpace(v)
		case h.kind == hCSeq:
			counts[3]++
			q.cseq = h
			f := bytes.Fields(v)
			if len(f) != 2 {
				return false
			}
			if _, err := strconv.ParseUint(string(f[0]), 10, 32); err != nil {
				return false
			}
			q.cseqMethod = f[1]
		case h.kind == hMaxForwards:
			counts[4]++
			n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				return false
			}
			q.maxForwards = n
		case h.kind == hContentLength:
			counts[5]++
			length = h
		case h.kind == hContentType:
			q.contentType = bytes.TrimSpace(v)
			if len(q.contentType) == 0 {
				return false
			}
		case h.kind == hContact:
			// Not read here, but what sipgo refuses must not pass.
			for _, c := range bytes.Split(v, []byte(",")) {
				if c = bytes.TrimSpace(c); !bytes.Equal(c, []byte("*")) && !wellFormedAddress(c) {
					return false
				}
			}
		case h.kind == hRoute:
			for len(v) > 0 {
				entry := v
				if i := firstComma(v); i >= 0 {
					entry, v = v[:i], v[i+1:]
				} else {
					v = nil
				}
				entry = bytes.TrimSpace(entry)
				if len(entry) == 0 || entry[0] != '<' || !wellFormedAddress(entry) {
					return false
				}
				if _, _, _, ok := splitSIPURI(routeURI(entry)); !ok {
					return false // a Route is a SIP URI (RFC 3261 section 20.34)
				}
				q.routes = append(q.routes, entry)
			}
		case h.kind == hTimestamp:
			q.timestamp = h
		case h.kind == hProxyRequire:
			return false
		}
		return true
	})
	if !ok || vias == 0 || counts != [6]int{1, 1, 1, 1, 1, 1} || len(q.viaBranch) == 0 || len(q.viaHost) == 0 || len(q.callID) == 0 {
		return q, false
	}
	if q.body, ok = bodyOf(raw, body, length); !ok {
		return q, false
	}
	return q, true
}

// splitSIPURI splits "sip:user@host:port;params" (or sips:) into user,
// host and port (0 when absent). An IPv6 reference, a password in the user
// part or any other shape reports false.
func splitSIPURI(u []byte) (user, host []byte, port int, ok bool) {
	switch {
	case bytes.HasPrefix(u, []byte("sip:")):
		u = u[4:]
	case bytes.HasPrefix(u, []byte("sips:")):
		u = u[5:]
	default:
		return nil, nil, 0, false
	}
	if bytes.ContainsAny(u, "<>") {
		return nil, nil, 0, false
	}
	// The user part may hold ';' (user-unreserved), the parameters no '@':
	// the user ends at the first '@', the host at the first ';' after it.
	if at := bytes.IndexByte(u, '@'); at >= 0 {
		user, u = u[:at], u[at+1:]
		if bytes.IndexByte(user, ':') >= 0 || bytes.IndexByte(u, '@') >= 0 {
			return nil, nil, 0, false // a password, or an unescaped '@' (RFC 3261 section 25.1)
		}
	}
	if i := bytes.IndexByte(u, ';'); i >= 0 {
		u = u[:i]
	}
	if bytes.IndexByte(u, '[') >= 0 {
		return nil, nil, 0, false
	}
	host = u
	if h, p, found := bytes.Cut(u, []byte(":")); found {
		n, err := strconv.Atoi(string(p))
		if err != nil || n < 1 || n > 65535 {
			return nil, nil, 0, false
		}
		host, port = h, n
	}
	return user, host, port, len(host) > 0
}

// routeURI is the URI of a Route entry "<uri>;params" (nil without the
// angle brackets, which the scan requires).
func routeURI(entry []byte) []byte {
	inner, ok := bytes.CutPrefix(entry, []byte("<"))
	if !ok {
		return nil
	}
	if i := bytes.IndexByte(inner, '>'); i >= 0 {
		return inner[:i]
	}
	return nil
}

// viaSentByHost is the host of a Via value's sent-by, or nil for an IPv6
// reference (left to the parser, which keys it its own way).
func viaSentByHost(v []byte) []byte {
	f := bytes.Fields(v)
	if len(f) < 2 {
		return nil
	}
	hp := f[1]
	if i := bytes.IndexByte(hp, ';'); i >= 0 {
		hp = hp[:i]
	}
	if bytes.IndexByte(hp, '[') >= 0 {
		return nil
	}
	if i := bytes.IndexByte(hp, ':'); i >= 0 {
		hp = hp[:i]
	}
	return hp
}

// wellFormedAddress reports whether a From or To value has balanced
// quotes (a backslash escapes inside them) and, with a '<', one '>' after
// it: what sipgo refuses (400, RFC 4475 section 3.1.2.6) the scan must not
// relay.
func wellFormedAddress(v []byte) bool {
	quoted, escaped, opened, closed := false, false, 0, 0
	lt, gt := 0, 0
	for i, c := range v {
		switch {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<':
			opened++
			lt = i
		case c == '>':
			closed++
			gt = i
			if closed > opened {
				return false
			}
		}
	}
	if quoted || opened != closed || opened > 1 {
		return false
	}
	uri := bytes.TrimSpace(v)
	if opened == 1 {
		if rest := bytes.TrimSpace(v[gt+1:]); len(rest) > 0 && rest[0] != ';' {
			return false // after the address, only parameters (RFC 3261 section 20.20)
		}
		uri = v[lt+1 : gt]
	} else if i := bytes.IndexByte(uri, ';'); i >= 0 {
		uri = uri[:i]
	}
	scheme, rest, ok := bytes.Cut(uri, []byte(":"))
	if !ok || len(scheme) == 0 || len(bytes.TrimSpace(rest)) == 0 || !isLetter(scheme[0]) || bytes.ContainsAny(scheme, " \t\"") {
		return false
	}
	if bytes.EqualFold(scheme, []byte("sip")) || bytes.EqualFold(scheme, []byte("sips")) {
		host := rest
		if at := bytes.LastIndexByte(host, '@'); at >= 0 {
			host = host[at+1:]
		}
		if len(host) == 0 || host[0] == ';' || host[0] == ':' {
			return false
		}
	}
	return true
}

// wellFormedVias reports whether every value of a Via line starts with a
// "SIP/2.0/transport host" sent-by, as sipgo requires.
func wellFormedVias(v []byte) bool {
	if len(bytes.TrimSpace(v)) == 0 {
		return false
	}
	for len(v) > 0 {
		one := v
		i := firstComma(v)
		if i >= 0 {
			one, v = v[:i], v[i+1:]
			if len(bytes.TrimSpace(v)) == 0 {
				return false // a trailing comma
			}
		} else {
			v = nil
		}
		one = bytes.TrimSpace(one)
		if len(one) < 9 || !bytes.EqualFold(one[:8], []byte("SIP/2.0/")) || viaSentByHost(one) == nil {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// hasTag reports whether a To or From value carries a tag parameter.
func hasTag(v []byte) bool {
	if i := bytes.LastIndexByte(v, '>'); i >= 0 {
		v = v[i:]
	}
	_, ok := viaParam(v, "tag")
	return ok
}

// ownRoute reads one Route entry of ours: "<sip:node@advertise:port;...;umr=g;gw=..;fl=..;dp=..>".
func (s *Server) ownRoute(entry []byte, pr *poppedRoute) bool {
	inner := routeURI(entry)
	_, host, _, ok := splitSIPURI(inner)
	if !ok || !s.isOurHost(string(host)) {
		return false
	}
	umr, ok := viaParam(inner, ourRouteParam)
	if !ok {
		return false
	}
	pr.found = true
	pr.count++
	pr.toward = sideBackend
	if v, ok := viaParam(inner, "dp"); ok {
		pr.plan = string(v)
	}
	if string(umr) == "g" {
		pr.toward = sideGateway
		if v, ok := viaParam(inner, "gw"); ok {
			pr.gateway = string(v)
		}
		if v, ok := viaParam(inner, "fl"); ok {
			pr.flowID, _ = strconv.ParseUint(string(v), 10, 64)
		}
	}
	return true
}

// relayInDialog relays an in-dialog ACK or BYE that carries our Route from
// the scan of its bytes, and reports whether it did; false leaves the
// request, untouched and uncounted, to handleRequest.
func (s *Server) relayInDialog(f flow, p *peer, raw []byte) bool {
	if p.refusal != "" || len(raw) < 4 || (raw[0] != 'A' && raw[0] != 'B') {
		return false
	}
	q, ok := scanRequest(raw, s.branchPrefix)
	if !ok || q.method == sip.INVITE || q.ownVia || !q.toTagged || q.maxForwards < 1 || string(q.cseqMethod) != string(q.method) {
		return false
	}
	var pr poppedRoute
	for _, r := range q.routes {
		if !s.ownRoute(r, &pr) {
			break
		}
	}
	if !pr.found {
		return false
	}
	// The next hop after our entries: the next Route, else the Request-URI.
	nextHost, nextPort := q.uriHost, q.uriPort
	if pr.count < len(q.routes) {
		if _, nextHost, nextPort, ok = splitSIPURI(routeURI(q.routes[pr.count])); !ok {
			return false
		}
	}

	// The sender's transaction: an ACK of a non-2xx ends one of ours, a BYE
	// seen before is a retransmission. Both are handleRequest's.
	keyMethod := q.method
	if q.method == sip.ACK {
		keyMethod = sip.INVITE
	}
	key := string(q.viaBranch) + "|" + string(q.viaHost) + "|" + string(keyMethod)
	if s.txs.byServerKey(key) != nil {
		return false
	}

	plan := pr.plan
	if p.side == sideGateway {
		v := s.callPolicy(p, q.policyRequest(f, true), pr.plan)
		if !v.Allow {
			return false
		}
		plan = v.plan
	}

	if q.method == sip.ACK {
		out := s.inDialogFlow(pr, string(nextHost), nextPort)
		s.countRequest(q.method, p, plan)
		if out == nil {
			s.log.Debug("ACK dropped: no next hop")
			return true
		}
		if b, ok := forwardBytes(nil, raw, s.appendVia(make([]byte, 0, 128), out.viaTransport(), s.newBranch(), f), pr.count); ok {
			_ = out.send(b)
		}
		return true
	}

	s.countRequest(q.method, p, plan)
	tx := &transaction{
		serverKey: key,
		method:    q.method,
		callID:    string(q.callID),
		in:        f,
		inSide:    p.side,
		inDialog:  true,
		gateway:   p.gateway,
		plan:      plan,
		started:   time.Now(),
		raw:       append([]byte(nil), raw...),
		popped:    pr.count,
	}
	tx.parser = s.parser
	if pr.toward == sideBackend {
		s.forwardInDialogToBackend(tx, string(nextHost), nextPort)
	} else {
		s.forwardToGateway(tx, pr)
	}
	return true
}

// inDialogFlow is where an ACK for a 2xx goes: the gateway connection our
// Route names (or any of that gateway's), or the configured backend server
// the next Route or Request-URI designates; nil when there is none.
func (s *Server) inDialogFlow(pr poppedRoute, host string, port int) flow {
	if pr.toward == sideGateway {
		if c := s.connByID(pr.flowID); c != nil && pr.flowID != 0 {
			return c
		}
		if g := s.rt().byName[pr.gateway]; g != nil {
			out, _ := s.gatewayConn(g)
			return out
		}
		return nil
	}
	if b := s.rt().pool.byTarget(host, port); b != nil {
		out, _ := s.backendFlow(b)
		return out
	}
	return nil
}
