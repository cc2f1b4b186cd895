package proxy

import (
	"bytes"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/umrouter/umrouter/dialplan"
)

// The in-dialog fast path relays the ACK and BYE of an established call,
// two of the three requests of every call, from a scan of their bytes:
// our own Route entries say where they go and under which dial plan, so
// sipgo's full parse (the largest cost of a call, docs/PERFORMANCE.md) is
// not needed. It takes only requests that handleRequest would relay
// without a local answer; anything else (a refusal, a loop, a
// retransmission, an odd shape) it leaves to handleRequest, which parses
// in full and decides as before. So every refusal stays in one place.

// inRequest is what the fast path reads from an in-dialog request.
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
}

// scanInDialog reads raw as an in-dialog ACK or BYE of the usual shape: a
// lower-case sip/sips Request-URI without headers, SIP/2.0, unfolded lines,
// each of From, To, Call-ID, CSeq, Max-Forwards and Content-Length exactly
// once, no Proxy-Require. It reports false for anything else.
func scanInDialog(raw []byte, branchPrefix string) (inRequest, bool) {
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
	default:
		return q, false
	}
	uri, ok := bytes.CutSuffix(line[4:], []byte(" SIP/2.0"))
	if !ok || bytes.ContainsAny(uri, " ?") {
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
		case h.nameIs(raw, "Via", "v"):
			if bytes.Contains(v, []byte(branchPrefix)) {
				q.ownVia = true
			}
			if vias == 0 {
				top := v
				if i := firstComma(top); i >= 0 {
					top = top[:i]
				}
				q.viaBranch, _ = viaParam(top, "branch")
				q.viaHost = viaSentByHost(top)
			}
			vias++
		case h.nameIs(raw, "From", "f"):
			counts[0]++
		case h.nameIs(raw, "To", "t"):
			counts[1]++
			q.toTagged = hasTag(v)
		case h.nameIs(raw, "Call-ID", "i"):
			counts[2]++
			q.callID = bytes.TrimSpace(v)
		case h.nameIs(raw, "CSeq", ""):
			counts[3]++
			if f := bytes.Fields(v); len(f) == 2 {
				q.cseqMethod = f[1]
			}
		case h.nameIs(raw, "Max-Forwards", ""):
			counts[4]++
			n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				return false
			}
			q.maxForwards = n
		case h.nameIs(raw, "Content-Length", "l"):
			counts[5]++
			length = h
		case h.nameIs(raw, "Content-Type", "c"):
			q.contentType = bytes.TrimSpace(v)
		case h.nameIs(raw, "Route", ""):
			for len(v) > 0 {
				i := firstComma(v)
				if i < 0 {
					q.routes = append(q.routes, bytes.TrimSpace(v))
					break
				}
				q.routes = append(q.routes, bytes.TrimSpace(v[:i]))
				v = v[i+1:]
			}
		case h.nameIs(raw, "Proxy-Require", ""):
			return false
		}
		return true
	})
	if !ok || vias == 0 || counts != [6]int{1, 1, 1, 1, 1, 1} || len(q.viaBranch) == 0 || len(q.viaHost) == 0 || len(q.callID) == 0 {
		return q, false
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace(raw[length.valueStart : length.end-2])))
	if err != nil || n < 0 || body+n > len(raw) {
		return q, false
	}
	q.body = raw[body : body+n]
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
	if i := bytes.IndexAny(u, ";>"); i >= 0 {
		u = u[:i]
	}
	if at := bytes.LastIndexByte(u, '@'); at >= 0 {
		user, u = u[:at], u[at+1:]
		if bytes.IndexByte(user, ':') >= 0 {
			return nil, nil, 0, false
		}
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
	inner, ok := bytes.CutPrefix(entry, []byte("<"))
	if !ok || len(inner) == 0 || inner[len(inner)-1] != '>' {
		return false
	}
	inner = inner[:len(inner)-1]
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
	q, ok := scanInDialog(raw, s.branchPrefix)
	if !ok || q.ownVia || !q.toTagged || q.maxForwards < 1 || string(q.cseqMethod) != string(q.method) {
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
		inner, _ := bytes.CutPrefix(q.routes[pr.count], []byte("<"))
		if _, nextHost, nextPort, ok = splitSIPURI(inner); !ok {
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
		pl, found := s.rt().plans.Lookup(pr.plan)
		if !found {
			return false
		}
		d := pl.Check(dialplan.Request{
			Method: string(q.method), Transport: dialplan.Transport(lower(f.viaTransport())),
			User: string(q.uriUser), Host: string(q.uriHost), ContentType: string(q.contentType), Body: q.body,
			InDialog: true,
		})
		if !d.Allow {
			return false
		}
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
	tx.parse = func() (sip.Message, error) { return s.parser.ParseSIP(tx.raw) }
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
