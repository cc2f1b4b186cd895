package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func crlfJoin(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n"))
}

func TestParseResponseReadsWhatAUACNeeds(t *testing.T) {
	raw := crlfJoin(
		"SIP/2.0 200 OK",
		"v: SIP/2.0/TLS 127.0.0.1:5000;rport=5000;branch=z9hG4bKa.1.i, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKother",
		"Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr;x=\"a,b\">",
		"Record-Route: <sip:p3.example;lr>",
		"From: <sip:5551234@gw1>;tag=abc",
		"t: \"Voice, Mail\" <sip:12345@um;user=phone>;tag=xyz;other=1",
		"i: call-1@umload",
		"CSeq:   7 INVITE",
		"m: <sip:uas@127.0.0.1:5070;transport=udp>;expires=60, <sip:second@x>",
		"Content-Type: application/sdp",
		"l: 4",
		"",
		"v=0\n")
	var m message
	if err := m.parse(raw); err != nil {
		t.Fatal(err)
	}
	check := map[string][2]string{
		"code":       {"200", itoa(m.code)},
		"call-id":    {"call-1@umload", string(m.callID)},
		"cseq":       {"7", itoa(int(m.cseq))},
		"cseqMethod": {"INVITE", string(m.cseqMethod)},
		"toTag":      {"xyz", string(m.toTag)},
		"topBranch":  {"z9hG4bKa.1.i", string(m.topBranch)},
		"contact":    {"sip:uas@127.0.0.1:5070;transport=udp", string(m.contact)},
		"body":       {"v=0\n", string(m.body)},
	}
	for k, v := range check {
		if v[0] != v[1] {
			t.Errorf("%s = %q, want %q", k, v[1], v[0])
		}
	}
	wantRR := []string{"<sip:p1.example;lr>", `<sip:p2.example;lr;x="a,b">`, "<sip:p3.example;lr>"}
	if got := strs(m.recordRoutes); !reflect.DeepEqual(got, wantRR) {
		t.Errorf("recordRoutes = %q, want %q", got, wantRR)
	}
}

func TestParseUnfoldsContinuationLines(t *testing.T) {
	raw := crlfJoin(
		"BYE sip:uas@127.0.0.1 SIP/2.0",
		"Via: SIP/2.0/UDP 127.0.0.1:5060",
		" ;branch=z9hG4bKfolded",
		"From: <sip:a@b>;tag=1",
		"To: <sip:c@d>",
		"\t;tag=2",
		"Call-ID: x",
		"CSeq: 2 BYE",
		"Content-Length: 0",
		"", "")
	var m message
	if err := m.parse(raw); err != nil {
		t.Fatal(err)
	}
	if !m.request || string(m.method) != "BYE" || string(m.ruri) != "sip:uas@127.0.0.1" {
		t.Errorf("start line: request=%v method=%q ruri=%q", m.request, m.method, m.ruri)
	}
	if string(m.topBranch) != "z9hG4bKfolded" || string(m.toTag) != "2" {
		t.Errorf("folded values: branch %q, to tag %q", m.topBranch, m.toTag)
	}
}

func TestParseRefusesMessagesWithoutMandatoryHeaders(t *testing.T) {
	for name, raw := range map[string][]byte{
		"no Call-ID":    crlfJoin("SIP/2.0 200 OK", "Via: SIP/2.0/TLS a;branch=z9hG4bK1", "CSeq: 1 INVITE", "", ""),
		"bad status":    crlfJoin("SIP/2.0 2x0 OK", "Via: SIP/2.0/TLS a", "Call-ID: x", "CSeq: 1 INVITE", "", ""),
		"no empty line": crlfJoin("SIP/2.0 200 OK", "Via: x", "Call-ID: x", "CSeq: 1 INVITE"),
		"bad CSeq":      crlfJoin("SIP/2.0 200 OK", "Via: x", "Call-ID: x", "CSeq: one INVITE", "", ""),
	} {
		var m message
		if err := m.parse(raw); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestDialogRouteReversesRecordRoute(t *testing.T) {
	rr := [][]byte{[]byte("<sip:backend-side;lr>"), []byte("<sip:gateway-side;lr>")}
	rs := dialogRoute(rr, []byte("sip:uas@10.0.0.1"))
	if rs.target != "sip:uas@10.0.0.1" {
		t.Errorf("target %q", rs.target)
	}
	want := []string{"<sip:gateway-side;lr>", "<sip:backend-side;lr>"}
	if !reflect.DeepEqual(rs.routes, want) {
		t.Errorf("routes %q, want %q", rs.routes, want)
	}
}

func TestDialogRouteStrictRouterBecomesRequestURI(t *testing.T) {
	rr := [][]byte{[]byte("<sip:loose;lr>"), []byte("<sip:strict;transport=tls>")}
	rs := dialogRoute(rr, []byte("sip:uas@10.0.0.1"))
	if rs.target != "sip:strict;transport=tls" {
		t.Errorf("target %q, want the strict router", rs.target)
	}
	want := []string{"<sip:loose;lr>", "<sip:uas@10.0.0.1>"}
	if !reflect.DeepEqual(rs.routes, want) {
		t.Errorf("routes %q, want %q", rs.routes, want)
	}
}

func TestDialogRouteWithoutRecordRouteGoesToContact(t *testing.T) {
	rs := dialogRoute(nil, []byte("sip:uas@10.0.0.1:5070"))
	if rs.target != "sip:uas@10.0.0.1:5070" || len(rs.routes) != 0 {
		t.Errorf("got %+v", rs)
	}
}

// The requests umload writes must read back as valid SIP for a third
// party (sipgo's parser, which the proxy uses), with the headers in place.
func TestRequestsParseWithSipgo(t *testing.T) {
	b := appendRequest(nil, &requestParams{
		method: "BYE", ruri: "sip:uas@127.0.0.1:5070",
		via:  "SIP/2.0/TLS 127.0.0.1:40000;rport;branch=z9hG4bKx.1.b",
		from: "<sip:5551234@127.0.0.1:40000>;tag=t1", to: "<sip:12345@um>;tag=t2",
		callID: "c1@umload", cseq: 2,
		routes: []string{"<sip:um@proxy:5061;transport=tls;lr>", "<sip:um@proxy:5099;transport=udp;lr>"},
	})
	msg, err := sip.NewParser().ParseSIP(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	req := msg.(*sip.Request)
	if req.Method != sip.BYE || req.Recipient.Host != "127.0.0.1" || req.CSeq().SeqNo != 2 {
		t.Errorf("parsed %s %s cseq %d", req.Method, req.Recipient.String(), req.CSeq().SeqNo)
	}
	routes := req.GetHeaders("Route")
	if len(routes) == 0 || !strings.Contains(routes[0].Value(), "5061") {
		t.Errorf("Route headers %v", routes)
	}
	if tag, _ := req.To().Params.Get("tag"); tag != "t2" {
		t.Errorf("To tag %q", tag)
	}
	if req.ContentLength().Value() != "0" {
		t.Errorf("Content-Length %q", req.ContentLength().Value())
	}
}

func TestInviteCarriesSDPWithContentLength(t *testing.T) {
	sdp := sdpOffer("127.0.0.1", true)
	b := appendRequest(nil, &requestParams{
		method: "INVITE", ruri: "sip:12345@um", via: "SIP/2.0/TLS h:1;branch=z9hG4bK1",
		from: "<sip:a@h>;tag=1", to: "<sip:12345@um>", callID: "c", cseq: 1,
		contact: "<sip:a@h:1;transport=tls>", body: sdp,
	})
	msg, err := sip.NewParser().ParseSIP(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(msg.Body(), sdp) || !bytes.Contains(sdp, []byte("RTP/SAVP")) || !bytes.Contains(sdp, []byte("a=crypto:")) {
		t.Errorf("body %q", msg.Body())
	}
}

func TestResponseCopiesViasRecordRouteAndAddsToTag(t *testing.T) {
	req := crlfJoin(
		"INVITE sip:12345@uas SIP/2.0",
		"Via: SIP/2.0/UDP proxy:5099;branch=z9hG4bKp",
		"Via: SIP/2.0/TLS gw:40000;branch=z9hG4bKg;received=127.0.0.1",
		"Record-Route: <sip:proxy:5099;lr>, <sip:proxy:5061;lr>",
		"From: <sip:a@gw>;tag=f",
		"To: <sip:12345@uas>",
		"Call-ID: c9",
		"CSeq: 4 INVITE",
		"Content-Length: 0", "", "")
	var m message
	if err := m.parse(req); err != nil {
		t.Fatal(err)
	}
	out := appendResponse(nil, &m, 180, "Ringing", "uas1", true, "Contact: <sip:uas@127.0.0.1>\r\n", "", nil)
	var r message
	if err := r.parse(out); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.code != 180 || string(r.toTag) != "uas1" || len(r.vias) != 2 || string(r.topBranch) != "z9hG4bKp" ||
		len(r.recordRoutes) != 2 || string(r.contact) != "sip:uas@127.0.0.1" || r.cseq != 4 {
		t.Errorf("response:\n%s", out)
	}
	// A 100 never carries a To tag the request lacked.
	trying := appendResponse(nil, &m, 100, "Trying", "uas1", false, "", "", nil)
	if bytes.Contains(trying, []byte("tag=uas1")) {
		t.Errorf("100 with a To tag:\n%s", trying)
	}
}

func TestStreamReaderCutsMessagesAndSkipsKeepAlives(t *testing.T) {
	one := "SIP/2.0 200 OK\r\nCall-ID: 1\r\nContent-Length: 3\r\n\r\nabc"
	two := "OPTIONS sip:x SIP/2.0\r\nl: 0\r\n\r\n"
	stream := "\r\n\r\n" + one + "\r\n" + two
	// Deliver the stream one byte per Read: framing must not depend on
	// how TCP segments it.
	sr := newStreamReader(&byteReader{b: []byte(stream)})
	for i, want := range []string{one, two} {
		got, err := sr.next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(got) != want {
			t.Errorf("message %d = %q, want %q", i, got, want)
		}
	}
}

func TestStreamReaderRefusesMessageWithoutContentLength(t *testing.T) {
	sr := newStreamReader(strings.NewReader("SIP/2.0 200 OK\r\nCall-ID: 1\r\n\r\n"))
	if _, err := sr.next(); err == nil {
		t.Fatal("accepted a stream message without Content-Length")
	}
}

type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, errEOF
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

func strs(b [][]byte) []string {
	out := make([]string, len(b))
	for i, x := range b {
		out[i] = string(x)
	}
	return out
}

func TestRouteSetAsOneHeaderOrOnePerEntry(t *testing.T) {
	routes := []string{"<sip:a;lr>", "<sip:b;lr>"}
	one := string(appendRoute(nil, routes, false))
	if one != "Route: <sip:a;lr>, <sip:b;lr>\r\n" {
		t.Errorf("combined: %q", one)
	}
	lines := string(appendRoute(nil, routes, true))
	if lines != "Route: <sip:a;lr>\r\nRoute: <sip:b;lr>\r\n" {
		t.Errorf("one per entry: %q", lines)
	}
}
