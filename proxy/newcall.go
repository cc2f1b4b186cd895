package proxy

import (
	"bytes"
	"net/netip"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"
)

// relayScanned relays the requests of a call's common course from a scan
// of their bytes (a new call's INVITE, the ACK and BYE of its dialog) and
// reports whether it did; false leaves raw, untouched and uncounted, to
// handleRequest.
func (s *Server) relayScanned(f flow, p *peer, raw []byte) bool {
	if len(raw) == 0 {
		return false
	}
	switch raw[0] {
	case 'I':
		return s.relayNewCall(f, p, raw)
	case 'A', 'B':
		return s.relayInDialog(f, p, raw)
	}
	return false
}

// relayNewCall relays a gateway's new-call INVITE (no To tag, no Route) from
// the scan of its bytes, as handleRequest would: the call's dial plan and
// its rules, this node's admission, 100 Trying, then the pool. It reports
// false, having changed nothing, for anything that needs a local answer or
// the parsed model (a refusal, a retransmission, redirect mode, an odd
// shape); handleRequest then parses in full and decides as before.
func (s *Server) relayNewCall(f flow, p *peer, raw []byte) bool {
	if p.refusal != "" || p.side != sideGateway || p.gateway == nil || len(raw) < 7 || raw[0] != 'I' || s.rt().backends.Mode == "redirect" {
		return false
	}
	q, ok := scanRequest(raw, s.branchPrefix)
	if !ok || q.method != sip.INVITE || q.toTagged || len(q.routes) > 0 || q.ownVia || q.maxForwards < 1 || string(q.cseqMethod) != "INVITE" {
		return false
	}
	key := string(q.viaBranch) + "|" + string(q.viaHost) + "|INVITE"
	if s.txs.byServerKey(key) != nil {
		return false // a retransmission: handleRequest answers it
	}
	v := s.callPolicy(p, q.policyRequest(f, false), "")
	if !v.Allow {
		return false // handleRequest refuses it (an admission refusal took no token)
	}
	s.countRequest(sip.INVITE, p, v.plan)
	tx := &transaction{
		serverKey: key,
		method:    sip.INVITE,
		callID:    string(q.callID),
		in:        f,
		inSide:    p.side,
		gateway:   p.gateway,
		plan:      v.plan,
		started:   time.Now(),
		raw:       append([]byte(nil), raw...),
	}
	tx.parser = s.parser
	tx.tryingDue = tx.started.Add(tryingDelay)
	s.forwardToPool(tx)
	return true
}

// trying is the 100 Trying for a scanned request: its Via lines (the top
// one with received and rport filled in, RFC 3581), From, To, Call-ID and
// CSeq, no body.
func trying(q *inRequest, raw []byte, src netip.AddrPort) []byte {
	b := make([]byte, 0, 512)
	b = append(b, "SIP/2.0 100 Trying\r\n"...)
	for i, h := range q.vias {
		if i == 0 {
			b = appendViaWithSource(b, raw, h, src)
			continue
		}
		b = append(b, raw[h.start:h.end]...)
	}
	for _, h := range []headerLine{q.from, q.to, q.callIDLine, q.cseq} {
		b = append(b, raw[h.start:h.end]...)
	}
	if q.timestamp.end > 0 { // RFC 3261 section 8.2.6.1
		b = append(b, raw[q.timestamp.start:q.timestamp.end]...)
	}
	return append(b, "Content-Length: 0\r\n\r\n"...)
}

// appendViaWithSource appends Via line h with its first value's bare
// "rport" set to the source port and "received" added (RFC 3581 section
// 4); a line without a bare rport is copied as it is.
func appendViaWithSource(dst, raw []byte, h headerLine, src netip.AddrPort) []byte {
	v := raw[h.valueStart : h.end-2]
	first, rest := v, []byte(nil)
	if i := firstComma(v); i >= 0 {
		first, rest = v[:i], v[i:]
	}
	if val, ok := viaParam(first, "rport"); !ok || len(val) != 0 {
		return append(dst, raw[h.start:h.end]...)
	}
	dst = append(dst, raw[h.start:h.valueStart]...)
	// Copy the first value parameter by parameter, filling the bare rport.
	params := bytes.Split(first, []byte(";"))
	for i, prm := range params {
		if i > 0 {
			dst = append(dst, ';')
		}
		if i > 0 && bytes.EqualFold(bytes.TrimSpace(prm), []byte("rport")) {
			dst = append(dst, "rport="...)
			dst = strconv.AppendUint(dst, uint64(src.Port()), 10)
			continue
		}
		dst = append(dst, prm...)
	}
	dst = append(dst, ";received="...)
	dst = src.Addr().Unmap().AppendTo(dst)
	dst = append(dst, rest...)
	return append(dst, crlf...)
}
