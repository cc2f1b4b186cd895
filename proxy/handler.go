package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/umrouter/umrouter/dialplan"
)

// errBareLineBreak refuses a message whose header section has a CR or LF
// outside a CRLF.
var errBareLineBreak = errors.New("bare CR or LF in the header section")

// ourRouteParam marks the Record-Route entries umrouter writes; its value
// says which side the entry faces ("g" gateway, "b" backend).
const ourRouteParam = "umr"

// handleFrame parses one message read from a stream connection.
func (s *Server) handleFrame(c *streamConn, frame []byte) {
	if hasBareLineBreak(frame) {
		s.malformed(c, *c.identity(), frame, errBareLineBreak)
		return
	}
	if r := s.rt(); !c.dialed && c.peerGen != r.gen {
		p := s.identify(c)
		c.who.Store(&p)
		c.peerGen = r.gen
	}
	p := c.identity()
	if r, ok := s.scanResponse(frame); ok {
		s.handleResponse(c, p, &r)
	} else if !s.relayScanned(c, p, frame) {
		msg, err := s.parser.ParseSIP(frame)
		if err != nil {
			s.malformed(c, *p, frame, err)
			return
		}
		msg.SetSource(c.remote.String())
		s.handleMessage(c, p, msg, frame)
	}
	if p.refusal != "" {
		c.closeAfterWrite.Store(true)
	}
}

// handleDatagram parses one UDP datagram.
func (s *Server) handleDatagram(f udpFlow, b []byte) {
	p := s.identifyByAddr(f.addr)
	if hasBareLineBreak(b) {
		s.malformed(f, p, b, errBareLineBreak)
		return
	}
	if r, ok := s.scanResponse(b); ok {
		s.handleResponse(f, &p, &r)
		return
	}
	if s.relayScanned(f, &p, b) {
		return
	}
	msg, err := s.parser.ParseSIP(b)
	if err != nil {
		s.malformed(f, p, b, err)
		return
	}
	msg.SetSource(f.addr.String())
	s.handleMessage(f, &p, msg, b)
}

// handleMessage routes a parsed message; raw is its bytes, valid only
// during the call (the read loop reuses the buffer).
func (s *Server) handleMessage(f flow, p *peer, msg sip.Message, raw []byte) {
	switch m := msg.(type) {
	case *sip.Request:
		s.handleRequest(f, p, m, raw)
	case *sip.Response:
		r, ok := responseFromModel(m, raw)
		if !ok {
			s.m.MalformedMessages.WithLabelValues(lower(f.viaTransport()), "missing_header").Inc()
			return
		}
		s.handleResponse(f, p, &r)
	}
}

// scanResponse reads a response for relaying without sipgo's full parse
// (see inResponse); false when raw is not a response of a shape it reads.
func (s *Server) scanResponse(raw []byte) (inResponse, bool) {
	r, ok := scanResponse(raw)
	if ok {
		r.parser = s.parser
	}
	return r, ok
}

// malformed answers an unparseable message with 400 when its Via, From, To,
// Call-ID and CSeq lines can be copied, and counts it either way.
func (s *Server) malformed(f flow, p peer, frame []byte, err error) {
	s.m.MalformedMessages.WithLabelValues(lower(f.viaTransport()), "parse").Inc()
	s.log.Info("malformed message", zap.String("remote", f.remoteAddr().String()), zap.String("side", p.side.String()), zap.Error(err))
	code, phrase, reason := 400, "Bad Request", "malformed"
	if sc := requestLineScheme(frame); sc != "" && sc != "sip" && sc != "sips" {
		// A well-formed request for a URI scheme umrouter never serves
		// (RFC 4475 section 3.3.3): 416, not 400.
		code, phrase, reason = 416, "Unsupported URI Scheme", "unsupported_uri_scheme"
	}
	if resp := errorResponseFor(frame, code, phrase); resp != nil {
		s.m.Refusals.WithLabelValues(strconv.Itoa(code), reason).Inc()
		_ = f.send(resp)
	}
}

// badRequestFor builds a 400 from the raw header lines a response needs, or
// returns nil when the message is not a request or lacks them.
func badRequestFor(frame []byte) []byte { return errorResponseFor(frame, 400, "Bad Request") }

// errorResponseFor builds an error response from the raw Via, From, To,
// Call-ID and CSeq lines of a request that could not be parsed or was cut
// short, or returns nil when it is not a request or lacks them.
func errorResponseFor(frame []byte, code int, phrase string) []byte {
	if len(frame) == 0 || bytes.HasPrefix(frame, []byte("SIP/")) {
		return nil // a response: never answered
	}
	head := frame
	if end := bytes.Index(frame, []byte("\r\n\r\n")); end >= 0 {
		head = frame[:end]
	}
	want := map[string]string{"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To", "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}
	var out bytes.Buffer
	fmt.Fprintf(&out, "SIP/2.0 %d %s", code, phrase)
	found := map[string]bool{}
	copying := false
	for _, line := range bytes.Split(head, []byte("\r\n"))[1:] {
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if copying { // a folded continuation of a header being copied
				if bytes.ContainsAny(line, "\r\n") {
					return nil // a bare line break cannot be copied faithfully
				}
				cont := bytes.TrimSpace(line)
				if len(cont) > 0 && cont[0] != ';' && cont[0] != ',' {
					out.WriteByte(' ') // the fold stands for one space (RFC 3261 7.3.1)
				}
				out.Write(cont)
			}
			continue
		}
		copying = false
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		name, ok := want[strings.ToLower(strings.TrimSpace(string(line[:colon])))]
		if !ok || (found[name] && name != "Via") {
			continue // only the first of a single-value header (RFC 4475 3.3.8)
		}
		if bytes.ContainsAny(line, "\r\n") {
			return nil // a bare line break cannot be copied faithfully
		}
		found[name] = true
		copying = true
		out.WriteString("\r\n")
		out.WriteString(name)
		out.WriteString(": ")
		out.Write(bytes.TrimSpace(line[colon+1:]))
	}
	if len(found) != 5 {
		return nil
	}
	out.WriteString("\r\nContent-Length: 0\r\n\r\n")
	return out.Bytes()
}

// hasBareLineBreak reports whether the header section of a message holds a
// CR or LF that is not part of a CRLF: sipgo splits lines on CRLF only, so
// such a byte would stay inside a header value and be forwarded, and the
// next hop might read two headers where umrouter saw one.
func hasBareLineBreak(frame []byte) bool {
	head := frame
	if end := bytes.Index(frame, []byte("\r\n\r\n")); end >= 0 {
		head = frame[:end+2]
	}
	// Every LF must follow a CR and every CR precede an LF: with as many
	// of each, checking the LFs suffices. IndexByte is vectorised; this
	// runs on every message.
	lfs := 0
	for i := 0; ; {
		j := bytes.IndexByte(head[i:], '\n')
		if j < 0 {
			break
		}
		if i+j == 0 || head[i+j-1] != '\r' {
			return true
		}
		lfs++
		i += j + 1
	}
	return bytes.Count(head, []byte("\r")) != lfs
}

// methodLabel is the metric label of a request method: the methods of RFC
// 3261 and its extensions as they are, any other token "other", so that a
// peer cannot grow a metric's series by inventing methods.
func methodLabel(m sip.RequestMethod) string {
	switch m {
	case sip.INVITE, sip.ACK, sip.BYE, sip.CANCEL, sip.OPTIONS, sip.REGISTER, sip.PRACK, sip.SUBSCRIBE,
		sip.NOTIFY, sip.PUBLISH, sip.INFO, sip.REFER, sip.MESSAGE, sip.UPDATE:
		return string(m)
	}
	return "other"
}

// requestLineScheme returns the Request-URI scheme of a request's first
// line, lower-cased, or "" when the line has no such shape.
func requestLineScheme(frame []byte) string {
	line := frame
	if i := bytes.Index(frame, []byte("\r\n")); i >= 0 {
		line = frame[:i]
	}
	parts := bytes.Fields(line)
	if len(parts) != 3 || !bytes.HasPrefix(parts[2], []byte("SIP/")) {
		return ""
	}
	scheme, _, ok := bytes.Cut(parts[1], []byte(":"))
	if !ok || len(scheme) == 0 {
		return ""
	}
	for i, c := range scheme { // RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
		alpha := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !alpha && (i == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return ""
		}
	}
	return strings.ToLower(string(scheme))
}

// refuse answers req with code and counts and logs the refusal. warning, if
// not empty, goes into a Warning header (RFC 3261 §20.43, code 399).
func (s *Server) refuse(f flow, p *peer, req *sip.Request, code int, reason, warning string, extra ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reasonPhrase(code), nil)
	res.SipVersion = "SIP/2.0" // whatever version the request claimed (505)
	if warning != "" {
		res.AppendHeader(sip.NewHeader("Warning", fmt.Sprintf("399 %s %q", s.cfg.Advertise, warning)))
	}
	for _, h := range extra {
		res.AppendHeader(h)
	}
	// Counted before it is sent: whoever saw the answer sees it counted.
	s.m.Refusals.WithLabelValues(strconv.Itoa(code), reason).Inc()
	if p.side == sideGateway {
		s.m.Responses.WithLabelValues(methodLabel(req.Method), codeClass(code), gatewayName(p.gateway), "").Inc()
	}
	_ = f.send([]byte(res.String()))
	fields := []zap.Field{zap.Int("code", code), zap.String("reason", reason), zap.String("method", string(req.Method)),
		zap.String("call_id", callID(req)), zap.String("remote", f.remoteAddr().String())}
	if p.gateway != nil {
		fields = append(fields, zap.String("gateway", p.gateway.Name))
	}
	s.log.Info("request refused", fields...)
}

func (s *Server) handleRequest(f flow, p *peer, req *sip.Request, raw []byte) {
	if req.Via() == nil || req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil {
		if req.Via() != nil {
			s.refuse(f, p, req, 400, "missing_header", "mandatory header missing")
		}
		s.m.MalformedMessages.WithLabelValues(lower(f.viaTransport()), "missing_header").Inc()
		return
	}
	// sipgo upper-cases the request line's method but not CSeq's; methods
	// are compared as sipgo left them, the bytes forwarded are as sent.
	if !strings.EqualFold(string(req.CSeq().MethodName), string(req.Method)) {
		s.refuse(f, p, req, 400, "cseq_method", "CSeq method does not match the request")
		return
	}
	if code, reason, warning := checkRequestShape(req); code != 0 {
		switch {
		case req.Method == sip.ACK:
		case reason == "duplicate_header":
			// sipgo's model keeps the last of each header; the answer
			// copies the first, as the sender's transaction layer reads them.
			s.m.Refusals.WithLabelValues("400", reason).Inc()
			if resp := errorResponseFor(raw, 400, "Bad Request"); resp != nil {
				_ = f.send(resp)
			}
			s.log.Info("request refused", zap.Int("code", 400), zap.String("reason", reason), zap.String("detail", warning))
		default:
			s.refuse(f, p, req, code, reason, warning, unsupportedHeader(req, code)...)
		}
		return
	}
	if p.refusal != "" {
		s.countRequest(req.Method, p, "")
		if req.Method != sip.ACK {
			s.refuse(f, p, req, 403, p.refusal, refusalText(p.refusal))
		}
		return
	}

	switch req.Method {
	case sip.ACK:
		if tx := s.txs.byServerKey(serverKey(req.Via(), sip.INVITE)); tx != nil {
			s.countRequest(req.Method, p, tx.plan)
			s.absorbAck(tx) // ACK of a non-2xx final: hop by hop, ends here
			return
		}
	case sip.CANCEL:
		s.countRequest(req.Method, p, "")
		s.handleCancel(f, p, req)
		return
	default:
		if tx := s.txs.byServerKey(serverKey(req.Via(), req.Method)); tx != nil {
			s.retransmission(tx)
			return
		}
	}

	if s.looped(req) {
		s.countRequest(req.Method, p, "")
		s.refuse(f, p, req, 482, "loop", "loop detected")
		return
	}
	if mf := req.MaxForwards(); mf != nil {
		if mf.Val() == 0 {
			s.countRequest(req.Method, p, "")
			if req.Method != sip.ACK {
				s.refuse(f, p, req, 483, "too_many_hops", "")
			}
			return
		}
		mf.Dec()
	} else {
		mf := sip.MaxForwardsHeader(70)
		req.AppendHeader(&mf)
	}

	popped := s.popOwnRoutes(req)
	inDialog := req.To().Params.Has("tag")

	// Which side does the request go to? Our own Record-Route says so for
	// in-dialog requests; otherwise requests cross from one side to the other.
	toward := sideBackend
	if p.side == sideBackend {
		toward = sideGateway
	}
	if popped.found {
		toward = popped.toward
	}

	initial := !inDialog && !popped.found && req.Route() == nil
	planName := popped.plan
	if p.side == sideGateway {
		if initial && req.Method == sip.OPTIONS && req.Recipient.User == "" {
			s.countRequest(req.Method, p, "")
			s.answerOptions(f, p, req)
			return
		}
		var ok bool
		if planName, ok = s.gatewayPolicy(f, p, req, initial, popped.plan); !ok {
			return
		}
	}
	s.countRequest(req.Method, p, planName)

	if req.Method == sip.ACK {
		popped.toward = toward
		s.forwardStateless(f, p, req, raw, popped)
		return
	}
	if s.rt().backends.Mode == "redirect" && req.Method == sip.INVITE && p.side == sideGateway && !inDialog && !popped.found {
		s.redirect(f, p, req)
		return
	}
	tx := s.newTransaction(f, p, req, planName)
	tx.raw = append([]byte(nil), raw...)
	tx.popped = popped.count
	if req.Method == sip.INVITE {
		tx.tryingDue = tx.started.Add(tryingDelay)
	}
	if toward == sideBackend {
		if inDialog || popped.found || req.Route() != nil {
			host, port := nextHop(req)
			s.forwardInDialogToBackend(tx, host, port)
		} else {
			s.forwardToPool(tx)
		}
		return
	}
	s.forwardToGateway(tx, popped)
}

// redirect answers a new call with 302 Moved Temporarily whose Contact is
// a healthy backend server, as the source product's call router does; the
// gateway then calls that server directly.
func (s *Server) redirect(f flow, p *peer, req *sip.Request) {
	b := s.rt().pool.pick(nil)
	if b == nil {
		secs := max(int(s.rt().backends.Health.Interval/time.Second), 1)
		s.refuse(f, p, req, 503, "no_backend", "no UM server available", retryAfter(secs))
		return
	}
	contact := sip.Uri{Scheme: "sip", User: req.Recipient.User, Host: b.host, Port: b.port, UriParams: sip.NewParams()}
	contact.UriParams.Add("transport", s.rt().backends.Transport)
	res := sip.NewResponseFromRequest(req, 302, "Moved Temporarily", nil)
	res.AppendHeader(&sip.ContactHeader{Address: contact})
	_ = f.send([]byte(res.String()))
	s.m.Responses.WithLabelValues(methodLabel(req.Method), "3xx", gatewayName(p.gateway), "").Inc()
	s.log.Info("call redirected", zap.String("call_id", callID(req)), zap.String("gateway", gatewayName(p.gateway)),
		zap.String("backend", b.addr))
}

// singleValueHeaders may appear once in a request (RFC 3261 section 7.3.1,
// RFC 4475 section 3.3.8).
var singleValueHeaders = []string{"from", "to", "call-id", "cseq", "max-forwards", "content-length"}

// checkRequestShape refuses what RFC 3261 section 16.3 tells a proxy to
// refuse before routing: a SIP version other than 2.0 (505), a
// Request-URI scheme it does not serve (416), a Request-URI carrying
// headers (400, RFC 4475 section 3.1.2.11), a header that must be single
// appearing twice (400), and a Proxy-Require it does not support (420:
// umrouter supports no extension there). It returns code 0 to pass.
func checkRequestShape(req *sip.Request) (code int, reason, warning string) {
	switch {
	case req.SipVersion != "SIP/2.0":
		return 505, "version_not_supported", "only SIP/2.0"
	case req.Recipient.Scheme != "sip" && req.Recipient.Scheme != "sips":
		return 416, "unsupported_uri_scheme", "Request-URI scheme " + req.Recipient.Scheme + " not served"
	case len(req.Recipient.Headers) > 0:
		return 400, "uri_headers", "Request-URI carries headers"
	}
	var counts [6]int
	for _, h := range req.Headers() {
		name := h.Name()
		for i, single := range singleValueHeaders {
			if strings.EqualFold(name, single) {
				counts[i]++
				if counts[i] > 1 {
					return 400, "duplicate_header", h.Name() + " appears twice"
				}
			}
		}
		if strings.EqualFold(name, "proxy-require") {
			return 420, "bad_extension", "unsupported extension in Proxy-Require"
		}
	}
	return 0, "", ""
}

// unsupportedHeader lists, for a 420, the option tags of Proxy-Require in
// an Unsupported header (RFC 3261 section 8.2.2.3).
func unsupportedHeader(req *sip.Request, code int) []sip.Header {
	if code != 420 {
		return nil
	}
	var tags []string
	for _, h := range req.GetHeaders("Proxy-Require") {
		tags = append(tags, h.Value())
	}
	return []sip.Header{sip.NewHeader("Unsupported", strings.Join(tags, ", "))}
}

// countRequest counts a request from a peer under its resolved dial plan.
func (s *Server) countRequest(method sip.RequestMethod, p *peer, plan string) {
	s.m.Requests.WithLabelValues(methodLabel(method), gatewayName(p.gateway), plan).Inc()
}

// gatewayPolicy applies the dial plan to a request from a gateway: the plan
// of the call (a hunt group of the gateway matching the dialed number, else
// the gateway's dial_plan; for in-dialog requests the plan our Record-Route
// recorded), then the plan's transport, URI and media rules. It answers the
// refusals itself and reports whether the request may pass.
func (s *Server) gatewayPolicy(f flow, p *peer, req *sip.Request, initial bool, dialogPlan string) (string, bool) {
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = h.Value()
	}
	v := s.callPolicy(p, dialplan.Request{
		Method: string(req.Method), Transport: dialplan.Transport(lower(f.viaTransport())),
		User: req.Recipient.User, Host: req.Recipient.Host, ContentType: ct, Body: req.Body(),
		InDialog: !initial,
	}, dialogPlan)
	if v.Allow {
		return v.plan, true
	}
	s.countRequest(req.Method, p, v.plan)
	if c, ok := f.(*streamConn); ok && v.Reason == "rate_limited" {
		c.pause = jittered(ratePause) // this runs on c's read goroutine
	}
	if req.Method != sip.ACK {
		var extra []sip.Header
		if v.Code == 503 {
			extra = append(extra, retryAfter(1))
		}
		s.refuse(f, p, req, v.Code, v.Reason, v.Warning, extra...)
	}
	return v.plan, false
}

// verdict is what callPolicy decided for a request from a gateway.
type verdict struct {
	dialplan.Decision
	plan string // the call's dial plan
}

// callPolicy decides on a request from a gateway, for both paths that relay
// one (handleRequest, and the fast paths that read bytes): the call's
// plan and its rules, then, for a new dialog or a request outside one,
// whether this node takes it (draining, transaction limit, the gateway's
// request rate, whose token it takes). Refusals are the caller's to send.
func (s *Server) callPolicy(p *peer, r dialplan.Request, dialogPlan string) verdict {
	rt := s.rt()
	var plan dialplan.Plan
	var d dialplan.Decision
	if dialogPlan != "" {
		var found bool
		if plan, found = rt.plans.Lookup(dialogPlan); !found {
			// The plan was removed by a reload: the gateway's own plan applies.
			plan, d = dialplan.Resolve(rt.plans, p.gateway.DialPlan, nil, "")
		} else {
			d = dialplan.Decision{Allow: true}
		}
	} else {
		plan, d = dialplan.Resolve(rt.plans, p.gateway.DialPlan, rt.huntGroups[p.gateway.Name], r.User)
	}
	if d.Allow {
		d = plan.Check(r)
	}
	if !d.Allow || r.InDialog {
		return verdict{d, plan.Name}
	}
	switch {
	case s.draining():
		d = dialplan.Decision{Code: 503, Reason: "draining", Warning: "node is draining"}
	case s.txs.count() >= int64(s.cfg.Limits.MaxTransactions):
		d = dialplan.Decision{Code: 503, Reason: "max_transactions", Warning: "too many transactions in progress"}
	case !s.rates.allow(p.gateway.Name, p.gateway.requestRate(s.cfg.Limits.RequestsPerSecond), time.Now()):
		d = dialplan.Decision{Code: 503, Reason: "rate_limited", Warning: "request rate of this gateway over its limit"}
	}
	return verdict{d, plan.Name}
}

// huntGroups converts g's configured hunt groups to dialplan's type.
func huntGroups(g *Gateway) []dialplan.HuntGroup {
	if len(g.HuntGroups) == 0 {
		return nil
	}
	hg := make([]dialplan.HuntGroup, len(g.HuntGroups))
	for i, h := range g.HuntGroups {
		hg[i] = dialplan.HuntGroup(h)
	}
	return hg
}

func refusalText(reason string) string {
	switch reason {
	case "not_a_gateway":
		return "certificate names no configured gateway"
	case "lync_peer_self_signed":
		return "Lync peers need a CA-issued certificate"
	case "own_certificate_self_signed":
		return "umrouter's certificate is self-signed: Lync needs a CA-issued one"
	}
	return reason
}

func retryAfter(seconds int) sip.Header {
	return sip.NewHeader("Retry-After", strconv.Itoa(seconds))
}

// looped reports whether the request already went through this process
// (one of its Vias carries our branch prefix).
func (s *Server) looped(req *sip.Request) bool {
	for _, h := range req.GetHeaders("Via") {
		if v, ok := h.(*sip.ViaHeader); ok {
			if b, _ := v.Params.Get("branch"); strings.HasPrefix(b, s.branchPrefix) {
				return true
			}
		}
	}
	return false
}

// poppedRoute is what our own Route entries told us.
type poppedRoute struct {
	found   bool
	count   int    // how many Route entries were ours
	plan    string // the dial plan the call was admitted under
	toward  side
	flowID  uint64
	gateway string
}

// popOwnRoutes removes the Route entries that umrouter wrote (loose routing,
// RFC 3261 §16.4) and returns what the last of them says about the next hop.
func (s *Server) popOwnRoutes(req *sip.Request) poppedRoute {
	var pr poppedRoute
	for {
		r := req.Route()
		if r == nil {
			return pr
		}
		side, ok := r.Address.UriParams.Get(ourRouteParam)
		if !ok || !s.isOurHost(r.Address.Host) {
			return pr
		}
		pr.found = true
		pr.count++
		pr.toward = sideBackend
		if v, ok := r.Address.UriParams.Get("dp"); ok {
			pr.plan = v
		}
		if side == "g" {
			pr.toward = sideGateway
			pr.gateway, _ = r.Address.UriParams.Get("gw")
			if v, ok := r.Address.UriParams.Get("fl"); ok {
				pr.flowID, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		req.RemoveHeader("Route")
	}
}

func (s *Server) isOurHost(host string) bool {
	return strings.EqualFold(strings.Trim(host, "[]"), s.cfg.Advertise)
}

func (s *Server) answerOptions(f flow, p *peer, req *sip.Request) {
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, PRACK, REFER, NOTIFY"))
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	s.m.Responses.WithLabelValues("OPTIONS", "2xx", gatewayName(p.gateway), "").Inc()
	_ = f.send([]byte(res.String()))
}

func (s *Server) newBranch() string {
	return s.branchPrefix + strconv.FormatUint(s.branchSeq.Add(1), 36)
}

func (s *Server) newTransaction(f flow, p *peer, req *sip.Request, plan string) *transaction {
	tx := &transaction{
		serverKey: serverKey(req.Via(), req.Method),
		method:    req.Method,
		callID:    callID(req),
		in:        f,
		inSide:    p.side,
		req:       req,
		inDialog:  req.To().Params.Has("tag"),
		gateway:   p.gateway,
		plan:      plan,
		started:   time.Now(),
	}
	return tx
}

// appendVia appends the Via line umrouter puts on top of a request it
// sends over tp. fl, the sender's stream connection, lets a response that
// outlived its transaction (a retransmitted 2xx) find its way back. Built
// as bytes: it is on every forwarded request.
func (s *Server) appendVia(dst []byte, tp, branch string, in flow) []byte {
	dst = append(dst, "Via: SIP/2.0/"...)
	dst = append(dst, tp...)
	dst = append(dst, ' ')
	dst = s.appendHostPort(dst, tp)
	dst = append(dst, ";branch="...)
	dst = append(dst, branch...)
	if in != nil { // nil: a request of umrouter's own (health probe)
		if id := in.flowID(); id != 0 {
			dst = append(dst, ";fl="...)
			dst = strconv.AppendUint(dst, id, 10)
		}
	}
	return append(dst, ";rport\r\n"...)
}

// viaHeader is a Via line of appendVia as a header of sipgo's model, for
// the requests umrouter builds with it (CANCEL, ACK, BYE of its own).
func viaHeader(line string) sip.Header {
	return sip.NewHeader("Via", strings.TrimSuffix(strings.TrimPrefix(line, "Via: "), "\r\n"))
}

// appendHostPort appends advertise:port for transport tp, bracketing an
// IPv6 address.
func (s *Server) appendHostPort(dst []byte, tp string) []byte {
	if strings.IndexByte(s.cfg.Advertise, ':') >= 0 {
		dst = append(dst, '[')
		dst = append(dst, s.cfg.Advertise...)
		dst = append(dst, ']')
	} else {
		dst = append(dst, s.cfg.Advertise...)
	}
	dst = append(dst, ':')
	return strconv.AppendInt(dst, int64(s.portFor(tp)), 10)
}

func (s *Server) portFor(tp string) int {
	switch tp {
	case "UDP":
		return s.udp.LocalAddr().(*net.UDPAddr).Port
	case "TCP":
		if p := s.tcpPort.Load(); p != 0 {
			return int(p)
		}
	case "DTLS":
		if p := s.dtlsPort.Load(); p != 0 {
			return int(p)
		}
	}
	if p := s.tlsPort.Load(); p != 0 {
		return int(p)
	}
	return 5061
}

// appendRecordRoute appends our Record-Route line facing side sd over
// flow f. The entry facing the gateway names it, its connection and the
// call's dial plan, so that in-dialog requests find their way and their
// policy back with no dialog state in umrouter. Names are URI-safe tokens
// (Config.Validate).
func (s *Server) appendRecordRoute(dst []byte, sd side, tp string, f flow, g *Gateway, plan string) []byte {
	dst = append(dst, "Record-Route: <sip:"...)
	dst = append(dst, s.cfg.NodeName...)
	dst = append(dst, '@')
	dst = s.appendHostPort(dst, tp)
	dst = append(dst, ";transport="...)
	dst = append(dst, lower(tp)...)
	dst = append(dst, ";lr;"+ourRouteParam+"="...)
	if sd != sideGateway {
		return append(dst, "b>\r\n"...)
	}
	dst = append(dst, 'g')
	if g != nil {
		dst = append(dst, ";gw="...)
		dst = append(dst, g.Name...)
	}
	if id := f.flowID(); id != 0 {
		dst = append(dst, ";fl="...)
		dst = strconv.AppendUint(dst, id, 10)
	}
	if plan != "" {
		dst = append(dst, ";dp="...)
		dst = append(dst, plan...)
	}
	return append(dst, ">\r\n"...)
}

func (s *Server) backendTransport() string { return strings.ToUpper(s.rt().backends.Transport) }

// backendFlow returns the path to backend server b, dialing a stream
// connection when there is none.
func (s *Server) backendFlow(b *backendServer) (flow, error) {
	tp := s.backendTransport()
	if tp == "UDP" {
		ap, err := b.resolve(s.ctx)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", b.addr, err)
		}
		return udpFlow{pc: s.udp, addr: ap}, nil
	}
	if c := b.conn.Load(); c != nil && !c.closed.Load() {
		return c, nil
	}
	b.connMu.Lock()
	defer b.connMu.Unlock()
	if c := b.conn.Load(); c != nil && !c.closed.Load() {
		return c, nil
	}
	c, err := s.dial(tp, b.addr, b.host, peer{side: sideBackend, backend: b.addr, names: []string{b.host}})
	if err != nil {
		return nil, err
	}
	b.conn.Store(c)
	return c, nil
}

// forwardToPool sends a new request to the next healthy backend server,
// failing over on transport errors; 503 when none is left.
func (s *Server) forwardToPool(tx *transaction) {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	s.forwardToPoolLocked(tx)
}

func (s *Server) forwardToPoolLocked(tx *transaction) {
	for {
		b := s.rt().pool.pick(tx.tried)
		if b == nil {
			s.noBackend(tx)
			return
		}
		tx.tried = append(tx.tried, b)
		out, err := s.backendFlow(b)
		if err == nil {
			err = s.sendTx(tx, out, b)
		}
		if err == nil {
			if tx.method == sip.INVITE {
				s.uncount(tx)
				b.active.Add(1)
				tx.counted = b
			}
			if tx.method == sip.INVITE && len(tx.tried) == 1 {
				s.log.Info("call routed", zap.String("call_id", tx.callID), zap.String("gateway", gatewayName(tx.gateway)),
					zap.String("dial_plan", tx.plan), zap.String("backend", b.addr))
			}
			return
		}
		s.m.BackendRequests.WithLabelValues(b.addr, "error").Inc()
		s.log.Warn("backend unreachable, trying the next one", zap.String("backend", b.addr), zap.String("call_id", tx.callID), zap.Error(err))
		s.rt().pool.markSuspect(b, s.rt().backends.Health.Interval)
	}
}

// noBackend ends tx with 503 and Retry-After: every server was tried or is down.
func (s *Server) noBackend(tx *transaction) {
	secs := int(s.rt().backends.Health.Interval / time.Second)
	if secs < 1 {
		secs = 1
	}
	s.respondLocal(tx, 503, "no_backend", "no UM server available", retryAfter(secs))
}

// sendTx builds the forwarded copy of tx.req for out and sends it. The
// request as received stays untouched: local answers are built from it.
func (s *Server) sendTx(tx *transaction, out flow, b *backendServer) error {
	old := tx.branch
	tx.branch = s.newBranch()
	top := s.appendVia(make([]byte, 0, 512), out.viaTransport(), tx.branch, tx.in)
	tx.via = string(top)
	if tx.method == sip.INVITE && !tx.inDialog {
		// Double Record-Route (RFC 5658): the entry facing the next hop on top.
		top = s.appendRecordRoute(top, oppositeSide(tx.inSide), out.viaTransport(), out, tx.gateway, tx.plan)
		top = s.appendRecordRoute(top, tx.inSide, tx.in.viaTransport(), tx.in, tx.gateway, tx.plan)
	}
	tx.bytes = s.forwardedBytes(tx.req, tx.raw, tx.popped, top)
	tx.out = out
	tx.backend = b
	tx.state = txCalling
	now := time.Now()
	// A new call or a probe waits health.timeout for a first answer (then
	// the next server is tried); any other request has nowhere else to go
	// and waits four times as long, since a busy peer is not a dead one.
	wait := s.rt().backends.Health.Timeout
	if !tx.probe && (tx.method != sip.INVITE || b == nil || tx.inDialog) {
		wait *= 4
	}
	tx.deadline = now.Add(wait)
	if out.viaTransport() == "UDP" {
		tx.retransEvery = t1
		tx.retransAt = now.Add(t1)
	} else {
		tx.retransAt = time.Time{}
	}
	if old == "" {
		s.txs.add(tx)
	} else {
		s.txs.rekey(tx, old)
	}
	if err := out.send(tx.bytes); err != nil {
		return err
	}
	if b != nil {
		s.m.BackendRequests.WithLabelValues(b.addr, "ok").Inc()
	}
	return nil
}

// forwardedBytes serialises req for the next hop with the header lines top
// on top: by editing raw (the request as received) when its shape allows,
// else from the parsed model, whose routes and Max-Forwards were already
// edited in place.
func (s *Server) forwardedBytes(req *sip.Request, raw []byte, popped int, top []byte) []byte {
	if raw != nil {
		if b, ok := forwardBytes(make([]byte, 0, len(raw)+len(top)), raw, top, popped); ok {
			return b
		}
	}
	if req == nil {
		return nil // relayed from a scan that guarantees the edit above
	}
	// The model's serialisation ends "headers CRLF CRLF body": our lines go
	// right after the start line.
	b := []byte(req.Clone().String())
	i := bytes.Index(b, crlf) + 2
	return append(b[:i:i], append(top, b[i:]...)...)
}

func oppositeSide(sd side) side {
	if sd == sideGateway {
		return sideBackend
	}
	return sideGateway
}

// forwardInDialogToBackend sends an in-dialog request to the backend that
// its next Route or Request-URI names; only configured servers are reachable.
func (s *Server) forwardInDialogToBackend(tx *transaction, host string, port int) {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	b := s.rt().pool.byTarget(host, port)
	if b == nil {
		s.respondLocal(tx, 404, "unknown_target", "in-dialog target is no configured UM server")
		return
	}
	tx.tried = append(tx.tried, b)
	out, err := s.backendFlow(b)
	if err == nil {
		err = s.sendTx(tx, out, b)
	}
	if err != nil {
		s.m.BackendRequests.WithLabelValues(b.addr, "error").Inc()
		s.respondLocal(tx, 503, "backend_unreachable", "UM server unreachable", retryAfter(5))
	}
}

// forwardToGateway sends a request from a backend to a gateway: over the
// connection our Record-Route names when it is still up, else over any live
// connection of that gateway, else a new TLS connection (outcalls).
func (s *Server) forwardToGateway(tx *transaction, pr poppedRoute) {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	var g *Gateway
	var out flow
	if pr.found {
		if c := s.connByID(pr.flowID); c != nil && pr.flowID != 0 {
			out, g = c, c.identity().gateway
		} else {
			g = s.rt().byName[pr.gateway]
		}
	} else {
		host, _ := nextHop(tx.req) // set: only handleRequest relays a request without our Route
		g = s.rt().byAddr[strings.ToLower(host)]
		if g == nil {
			s.respondLocal(tx, 404, "unknown_gateway", "no gateway by that name")
			return
		}
		if g.OutcallsAllowed != nil && !*g.OutcallsAllowed {
			s.respondLocal(tx, 403, "outcalls_not_allowed", "outcalls through this gateway are not allowed")
			return
		}
	}
	if g == nil && out == nil {
		s.respondLocal(tx, 404, "unknown_gateway", "gateway of this dialog is gone")
		return
	}
	tx.gateway = g
	if out == nil {
		var err error
		if out, err = s.gatewayConn(g); err != nil {
			s.log.Warn("gateway unreachable", zap.String("gateway", g.Name), zap.Error(err))
			s.respondLocal(tx, 503, "gateway_unreachable", "gateway unreachable", retryAfter(5))
			return
		}
	}
	if err := s.sendTx(tx, out, nil); err != nil {
		if errors.Is(err, errTooLargeForDTLS) {
			s.respondLocal(tx, 513, "too_large_for_dtls", "message too large for the gateway's DTLS association")
			return
		}
		s.respondLocal(tx, 503, "gateway_unreachable", "gateway unreachable", retryAfter(5))
	}
}

// nextHop is the host and port a request goes to after our own Route
// entries were removed: the next Route, else the Request-URI.
func nextHop(req *sip.Request) (string, int) {
	u := req.Recipient
	if r := req.Route(); r != nil {
		u = r.Address
	}
	return u.Host, u.Port
}

// forwardStateless relays an ACK for a 2xx (end to end, no transaction).
func (s *Server) forwardStateless(f flow, p *peer, req *sip.Request, raw []byte, pr poppedRoute) {
	host, port := nextHop(req)
	out := s.inDialogFlow(pr, host, port)
	if out == nil {
		s.log.Debug("ACK dropped: no next hop", zap.String("call_id", callID(req)))
		return
	}
	_ = out.send(s.forwardedBytes(req, raw, pr.count, s.appendVia(nil, out.viaTransport(), s.newBranch(), f)))
}

func (s *Server) absorbAck(tx *transaction) {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.state == txCompleted {
		tx.state = txTerminated
		s.txs.remove(tx)
	}
}

// retransmission answers a retransmitted request with the last response.
func (s *Server) retransmission(tx *transaction) {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.lastResponse == nil && !tx.tryingDue.IsZero() {
		s.sendTrying(tx) // the sender is impatient: no reason to wait longer
		return
	}
	if tx.lastResponse != nil {
		_ = tx.in.send(tx.lastResponse)
	}
}

// tryingDelay is how long an INVITE waits for the next hop's first
// provisional response before umrouter answers 100 Trying itself (RFC 3261
// section 17.2.1: within 200 ms). Most backends ring sooner, and their 180
// makes umrouter's 100 needless: one message less per call on the
// gateway's connection. The sweeper's tick makes it 200-300 ms.
const tryingDelay = 200 * time.Millisecond

// sendTrying answers tx's INVITE with 100 Trying unless a response went
// upstream already. Call with tx.mu held.
func (s *Server) sendTrying(tx *transaction) {
	tx.tryingDue = time.Time{}
	if tx.in == nil || tx.lastResponse != nil || (tx.state != txCalling && tx.state != txProceeding) {
		return
	}
	var b []byte
	if q, ok := scanRequest(tx.raw, s.branchPrefix); ok {
		b = trying(&q, tx.raw, tx.in.remoteAddr())
	} else if req := tx.request(); req != nil {
		b = []byte(sip.NewResponseFromRequest(req, 100, "Trying", nil).String())
	} else {
		return
	}
	tx.lastResponse = b
	_ = tx.in.send(b)
}

// handleCancel answers a CANCEL at once and cancels the forwarded INVITE
// toward the next hop; the sender gets its 487 from that exchange.
func (s *Server) handleCancel(f flow, p *peer, req *sip.Request) {
	tx := s.txs.byServerKey(serverKey(req.Via(), sip.INVITE))
	if tx == nil {
		s.refuse(f, p, req, 481, "no_transaction", "")
		return
	}
	ok := sip.NewResponseFromRequest(req, 200, "OK", nil)
	_ = f.send([]byte(ok.String()))
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.state != txCalling && tx.state != txProceeding || tx.cancelled {
		return
	}
	tx.cancelled = true
	if tx.state == txProceeding {
		s.sendCancel(tx)
	}
	// In txCalling the CANCEL waits for the first response (RFC 3261 §9.1).
}

// sendCancel sends CANCEL for the forwarded INVITE (RFC 3261 §9.1): same
// branch, Request-URI, Route set and CSeq number.
func (s *Server) sendCancel(tx *transaction) {
	req := tx.request()
	if req == nil {
		s.log.Warn("CANCEL not sent: the INVITE does not parse", zap.String("call_id", tx.callID))
		return
	}
	c := sip.NewRequest(sip.CANCEL, req.Recipient)
	c.AppendHeader(viaHeader(tx.via))
	for _, h := range req.GetHeaders("Route") {
		c.AppendHeader(sip.HeaderClone(h))
	}
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.AppendHeader(sip.HeaderClone(req.From()))
	c.AppendHeader(sip.HeaderClone(req.To()))
	c.AppendHeader(sip.HeaderClone(req.CallID()))
	c.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.CANCEL})
	c.SetBody(nil)
	_ = tx.out.send([]byte(c.String()))
}

// sendAck acknowledges a non-2xx final response hop by hop (RFC 3261 §17.1.1.3).
func (s *Server) sendAck(tx *transaction, r *inResponse) {
	req := tx.request()
	if req == nil {
		s.log.Warn("ACK not sent: the INVITE does not parse", zap.String("call_id", tx.callID))
		return
	}
	res := r.model()
	a := sip.NewRequest(sip.ACK, req.Recipient)
	a.AppendHeader(viaHeader(tx.via))
	for _, h := range req.GetHeaders("Route") {
		a.AppendHeader(sip.HeaderClone(h))
	}
	mf := sip.MaxForwardsHeader(70)
	a.AppendHeader(&mf)
	a.AppendHeader(sip.HeaderClone(req.From()))
	if res != nil && res.To() != nil {
		a.AppendHeader(sip.HeaderClone(res.To()))
	} else {
		a.AppendHeader(sip.HeaderClone(req.To())) // unreadable To: the request's, so the ACK stays well-formed
	}
	a.AppendHeader(sip.HeaderClone(req.CallID()))
	a.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.ACK})
	a.SetBody(nil)
	_ = tx.out.send([]byte(a.String()))
}

// respondLocal ends tx with a response umrouter makes itself. Call with tx.mu held.
func (s *Server) respondLocal(tx *transaction, code int, reason, warning string, extra ...sip.Header) {
	req := tx.request()
	if req == nil {
		// Relayed from a scan that sipgo cannot parse: answer from the
		// raw lines, as for a malformed request.
		s.m.Refusals.WithLabelValues(strconv.Itoa(code), reason).Inc()
		s.relayFinal(tx, errorResponseFor(tx.raw, code, reasonPhrase(code)), code, 0)
		return
	}
	res := sip.NewResponseFromRequest(req, code, reasonPhrase(code), nil)
	res.SipVersion = "SIP/2.0"
	if warning != "" {
		res.AppendHeader(sip.NewHeader("Warning", fmt.Sprintf("399 %s %q", s.cfg.Advertise, warning)))
	}
	for _, h := range extra {
		res.AppendHeader(h)
	}
	s.m.Refusals.WithLabelValues(strconv.Itoa(code), reason).Inc()
	s.log.Info("request refused", zap.Int("code", code), zap.String("reason", reason), zap.String("method", string(tx.method)),
		zap.String("call_id", tx.callID), zap.String("gateway", gatewayName(tx.gateway)))
	s.relayFinal(tx, []byte(res.String()), code, retryAfterOf(res, 0))
}

// handleResponse relays a response to the sender of the transaction it
// belongs to, or statelessly by its Via when the transaction is over.
func (s *Server) handleResponse(f flow, p *peer, r *inResponse) {
	if p.refusal != "" {
		// A peer whose requests are refused does not get to answer ours.
		s.m.DroppedResponses.WithLabelValues("refused_peer").Inc()
		s.log.Debug("response from a refused peer dropped", zap.Stringer("remote", f.remoteAddr()), zap.String("refusal", p.refusal))
		return
	}
	if !strings.HasPrefix(r.branch, s.branchPrefix) {
		s.m.DroppedResponses.WithLabelValues("not_ours").Inc()
		s.log.Debug("response not for us dropped", zap.String("branch", r.branch))
		return
	}
	tx := s.txs.byBranch(r.branch)
	if tx == nil {
		s.forwardResponseStateless(f, r)
		return
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if !strings.EqualFold(string(r.cseqMethod), string(tx.method)) || tx.state == txTerminated {
		return // the answer to our CANCEL, one for no request of ours, or a late retransmission
	}
	code := r.code
	if tx.state == txCompleted {
		if code >= 300 && tx.method == sip.INVITE {
			s.sendAck(tx, r) // retransmitted final: our ACK was lost
		}
		return
	}
	if tx.state == txCalling {
		tx.state = txProceeding
		tx.retransAt = time.Time{}
		if tx.method == sip.INVITE {
			tx.deadline = time.Now().Add(timerC)
		} else {
			tx.deadline = tx.started.Add(timerF)
			if tx.out.viaTransport() == "UDP" && code < 200 {
				tx.retransAt = time.Now().Add(t2)
				tx.retransEvery = t2
			}
		}
		if tx.cancelled && code < 200 {
			s.sendCancel(tx)
		}
	}
	if code == 100 {
		return // hop by hop
	}
	if code < 200 {
		tx.gotProvisional = true
		s.relay(tx, s.upstreamBytes(f, r), code)
		return
	}
	if tx.method == sip.INVITE && code >= 300 {
		s.sendAck(tx, r)
	}
	if tx.method == sip.INVITE && code < 300 && tx.inSide == sideGateway {
		if d := s.checkAnswer(tx, r); !d.Allow {
			s.refuseAnswer(f, tx, r, d)
			return
		}
	}
	if s.shouldFailover(tx, code) {
		if d := retryAfterValue(r.retryAfter, 0); d > 0 {
			s.rt().pool.markDown(tx.backend, d)
		} else {
			s.rt().pool.markSuspect(tx.backend, s.rt().backends.Health.Interval)
		}
		s.log.Warn("backend refused the call, trying the next one", zap.String("backend", tx.backend.addr), zap.Int("code", code), zap.String("call_id", tx.callID))
		s.forwardToPoolLocked(tx)
		return
	}
	s.relayFinal(tx, s.upstreamBytes(f, r), code, retryAfterValue(r.retryAfter, 0))
}

// checkAnswer applies the call's dial plan to the SDP of a 2xx to an INVITE
// from a gateway: on a secured plan the answer (or, for a late offer, the
// offer) must keep every stream on SRTP.
func (s *Server) checkAnswer(tx *transaction, r *inResponse) dialplan.Decision {
	plan, ok := s.rt().plans.Lookup(tx.plan)
	if !ok || len(r.body) == 0 {
		return dialplan.Decision{Allow: true}
	}
	return plan.CheckMedia(string(r.contentType), r.body)
}

// refuseAnswer ends a call whose 2xx the plan refuses: the backend's dialog
// is acknowledged and hung up, and the gateway, which never saw the 2xx,
// gets the refusal as the INVITE's final response. Call with tx.mu held.
func (s *Server) refuseAnswer(f flow, tx *transaction, r *inResponse, d dialplan.Decision) {
	if res, req := r.model(), tx.request(); res != nil && res.To() != nil && req != nil {
		ack := s.inDialogToNextHop(req, tx.out, res, sip.ACK, req.CSeq().SeqNo)
		bye := s.inDialogToNextHop(req, tx.out, res, sip.BYE, req.CSeq().SeqNo+1)
		_ = tx.out.send([]byte(ack.String())) // one message per send: UDP carries one per datagram
		_ = tx.out.send([]byte(bye.String()))
	} else {
		// Without a readable To (its tag) there is no dialog to hang up:
		// the backend's own timers end it when no ACK comes.
		s.m.MalformedMessages.WithLabelValues(lower(f.viaTransport()), "parse").Inc()
	}
	s.uncount(tx)
	s.log.Warn("backend answer refused by the dial plan; call ended", zap.String("call_id", tx.callID),
		zap.String("dial_plan", tx.plan), zap.String("reason", d.Reason), zap.String("warning", d.Warning))
	s.respondLocal(tx, d.Code, d.Reason, d.Warning)
}

// inDialogToNextHop builds a request of umrouter's own in the dialog that
// res (a 2xx from the next hop over out, to req) established: ACK or BYE to
// its Contact.
func (s *Server) inDialogToNextHop(req *sip.Request, out flow, res *sip.Response, method sip.RequestMethod, seq uint32) *sip.Request {
	target := req.Recipient
	if ct := res.Contact(); ct != nil {
		target = ct.Address
	}
	r := sip.NewRequest(method, target)
	r.AppendHeader(viaHeader(string(s.appendVia(nil, out.viaTransport(), s.newBranch(), nil))))
	mf := sip.MaxForwardsHeader(70)
	r.AppendHeader(&mf)
	r.AppendHeader(sip.HeaderClone(req.From()))
	r.AppendHeader(sip.HeaderClone(res.To()))
	r.AppendHeader(sip.HeaderClone(req.CallID()))
	r.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	r.SetBody(nil)
	return r
}

// shouldFailover: a new call that the backend refused before ringing, with
// a code that means "not me, now", goes to the next server.
func (s *Server) shouldFailover(tx *transaction, code int) bool {
	if tx.method != sip.INVITE || tx.gotProvisional || tx.cancelled || tx.backend == nil || tx.inDialog {
		return false
	}
	return code == 503 || code == 408
}

// retryAfterOf is the Retry-After of a response umrouter made itself.
func retryAfterOf(res *sip.Response, def time.Duration) time.Duration {
	if h := res.GetHeader("Retry-After"); h != nil {
		return retryAfterValue([]byte(h.Value()), def)
	}
	return def
}

// relay sends a provisional response upstream. Call with tx.mu held.
func (s *Server) relay(tx *transaction, b []byte, code int) {
	if tx.in == nil || b == nil {
		return // our own request (nobody upstream), or nothing relayable
	}
	tx.lastResponse = b
	tx.tryingDue = time.Time{}
	if tx.inSide == sideGateway {
		s.m.Responses.WithLabelValues(methodLabel(tx.method), codeClass(code), gatewayName(tx.gateway), tx.plan).Inc()
	}
	if err := tx.in.send(b); errors.Is(err, errTooLargeForDTLS) {
		s.log.Warn("response not relayed: too large for the DTLS association", zap.String("call_id", tx.callID), zap.Int("code", code), zap.Error(err))
	}
}

// relayFinal sends a final response upstream and retires tx. Call with tx.mu held.
// retry is the response's Retry-After, for a health probe's verdict.
func (s *Server) relayFinal(tx *transaction, b []byte, code int, retry time.Duration) {
	// Accounted before it is sent: whoever saw the answer sees the count.
	s.accountCall(tx, code)
	s.relay(tx, b, code)
	if tx.onFinal != nil {
		tx.onFinal(code, retry)
	}
	if tx.method == sip.INVITE {
		s.m.CallSetupSeconds.Observe(time.Since(tx.started).Seconds())
	}
	if tx.method == sip.INVITE && code >= 300 && tx.in != nil {
		// Keep it to absorb the sender's ACK (and retransmitted finals).
		tx.state = txCompleted
		tx.settled.Store(true)
		tx.retransAt = time.Time{}
		tx.deadline = time.Now().Add(completedWindow)
		return
	}
	tx.state = txTerminated
	s.txs.remove(tx)
}

// accountCall keeps the per-backend call counts and calls_active in step
// with the final response of tx. Call with tx.mu held.
func (s *Server) accountCall(tx *transaction, code int) {
	switch {
	case tx.method == sip.INVITE && code < 300 && tx.counted != nil:
		if n, opened := s.dialogs.open(tx.callID, tx.counted, time.Now()); opened {
			s.m.CallsActive.Set(float64(n))
			tx.counted = nil // the dialog holds the count now
		}
		s.uncount(tx) // a re-INVITE of a known call: give the count back
	case tx.method == sip.INVITE:
		s.uncount(tx)
	case tx.method == sip.BYE:
		if b, n := s.dialogs.close(tx.callID); b != nil {
			b.active.Add(-1)
			s.m.CallsActive.Set(float64(n))
		}
	}
}

// uncount returns the call count tx holds on a backend, if any.
func (s *Server) uncount(tx *transaction) {
	if tx.counted != nil {
		tx.counted.active.Add(-1)
		tx.counted = nil
	}
}

// upstreamBytes is a response as it goes upstream: without our Via. It
// edits the received bytes when their shape allows, else serialises the
// parsed response; nil when neither can be done.
func (s *Server) upstreamBytes(f flow, r *inResponse) []byte {
	if b, ok := cutTopVia(make([]byte, 0, len(r.raw)), r.raw); ok {
		return b
	}
	res := r.model()
	if res == nil {
		s.m.MalformedMessages.WithLabelValues(lower(f.viaTransport()), "parse").Inc()
		return nil
	}
	res.RemoveHeader("Via")
	return []byte(res.String())
}

// forwardResponseStateless relays a response that outlived its transaction
// (a retransmitted or forked 2xx) using the flow id in our Via.
func (s *Server) forwardResponseStateless(f flow, r *inResponse) {
	if r.flowID == "" {
		return
	}
	id, _ := strconv.ParseUint(r.flowID, 10, 64)
	c := s.connByID(id)
	if c == nil {
		return
	}
	if b := s.upstreamBytes(f, r); b != nil {
		_ = c.send(b)
	}
}

// expireTx is the sweeper's visit: retransmit over UDP, fail over or time
// out a silent next hop, drop finished state.
func (s *Server) expireTx(tx *transaction, now time.Time) {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.state == txTerminated {
		return
	}
	if !tx.tryingDue.IsZero() && !now.Before(tx.tryingDue) {
		s.sendTrying(tx)
	}
	if !tx.retransAt.IsZero() && !now.Before(tx.retransAt) && tx.state != txCompleted {
		_ = tx.out.send(tx.bytes)
		if tx.method == sip.INVITE {
			tx.retransEvery *= 2 // Timer A doubles without cap
		} else {
			tx.retransEvery = min(tx.retransEvery*2, t2) // Timer E
		}
		tx.retransAt = now.Add(tx.retransEvery)
	}
	if now.Before(tx.deadline) {
		return
	}
	switch tx.state {
	case txCalling:
		if tx.probe {
			tx.state = txTerminated
			s.txs.remove(tx)
			tx.onFinal(408, 0)
			return
		}
		// Only a new call's silence counts against a backend and moves the
		// call on: a server may rightly ignore some other request (an
		// unknown method, say), and must not leave the pool for it.
		if tx.backend != nil && tx.method == sip.INVITE && !tx.inDialog && !tx.cancelled {
			s.rt().pool.markSuspect(tx.backend, s.rt().backends.Health.Interval)
			s.log.Warn("backend did not answer, trying the next one", zap.String("backend", tx.backend.addr), zap.String("call_id", tx.callID))
			s.forwardToPoolLocked(tx)
			return
		}
		s.respondLocal(tx, 408, "timeout", "next hop did not answer")
	case txProceeding:
		if tx.method == sip.INVITE {
			s.sendCancel(tx)
		}
		s.respondLocal(tx, 408, "timeout", "no final response")
	case txCompleted:
		tx.state = txTerminated
		s.txs.remove(tx)
	}
}

func gatewayName(g *Gateway) string {
	if g == nil {
		return ""
	}
	return g.Name
}

func callID(m sip.Message) string {
	if c := m.CallID(); c != nil {
		return c.Value()
	}
	return ""
}

func codeClass(code int) string {
	if code < 100 || code > 699 {
		return "other"
	}
	return strconv.Itoa(code/100) + "xx"
}

// reasonPhrase is the RFC 3261 §21 reason phrase for the codes umrouter sends itself.
func reasonPhrase(code int) string {
	switch code {
	case 100:
		return "Trying"
	case 200:
		return "OK"
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 413:
		return "Request Entity Too Large"
	case 481:
		return "Call/Transaction Does Not Exist"
	case 482:
		return "Loop Detected"
	case 483:
		return "Too Many Hops"
	case 484:
		return "Address Incomplete"
	case 488:
		return "Not Acceptable Here"
	case 416:
		return "Unsupported URI Scheme"
	case 420:
		return "Bad Extension"
	case 505:
		return "Version Not Supported"
	case 503:
		return "Service Unavailable"
	case 513:
		return "Message Too Large"
	}
	return "Unknown"
}
