package proxy

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

const rawInvite = "INVITE sip:12345@127.0.0.1 SIP/2.0\r\n" +
	"Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK-1\r\n" +
	"Route: <sip:node@127.0.0.1:5061;transport=tls;lr;umr=g>\r\n" +
	"Route: <sip:node@127.0.0.1:5061;transport=udp;lr;umr=b>\r\n" +
	"Route: <sip:other@10.9.9.9;lr>\r\n" +
	"Max-Forwards: 70\r\n" +
	"From: <sip:a@gw>;tag=1\r\nTo: <sip:12345@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n" +
	"Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"

func TestForwardBytesMatchesTheParsedModel(t *testing.T) {
	top := "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKumr.1;rport\r\n"
	out, ok := forwardBytes(nil, []byte(rawInvite), []byte(top), 2)
	if !ok {
		t.Fatal("fast path refused a plain INVITE")
	}
	m, err := sip.ParseMessage(out)
	if err != nil {
		t.Fatalf("forwarded bytes do not parse: %v\n%s", err, out)
	}
	req := m.(*sip.Request)
	if got := req.MaxForwards().Val(); got != 69 {
		t.Errorf("Max-Forwards %d, want 69", got)
	}
	routes := req.GetHeaders("Route")
	if len(routes) != 1 || !strings.Contains(routes[0].Value(), "other@10.9.9.9") {
		t.Errorf("routes %v, want only the foreign one", routes)
	}
	vias := req.GetHeaders("Via")
	if len(vias) != 2 || !strings.Contains(vias[0].Value(), "z9hG4bKumr.1") {
		t.Errorf("vias %v, want ours on top of the sender's", vias)
	}
	if string(req.Body()) != "v=0\n" || req.Recipient.User != "12345" {
		t.Errorf("body %q, R-URI %s changed", req.Body(), req.Recipient.String())
	}
}

func TestForwardBytesLeavesUnusualShapesToTheParser(t *testing.T) {
	for name, raw := range map[string]string{
		"folded header":   strings.Replace(rawInvite, "Max-Forwards: 70\r\n", "Max-Forwards:\r\n 70\r\n", 1),
		"no max-forwards": strings.Replace(rawInvite, "Max-Forwards: 70\r\n", "", 1),
		"bare LF lines":   strings.ReplaceAll(rawInvite, "\r\n", "\n"),
	} {
		if _, ok := forwardBytes(nil, []byte(raw), nil, 2); ok {
			t.Errorf("%s: fast path took a shape it must leave to the parser", name)
		}
	}
}

// TestForwardBytesPopsRoutesFromACommaSeparatedLine: a UAC may write its
// route set as one Route header (umload and SIPp do); our entries are popped
// from it and the foreign one stays, without the slow path.
func TestForwardBytesPopsRoutesFromACommaSeparatedLine(t *testing.T) {
	raw := strings.Replace(rawInvite,
		"Route: <sip:node@127.0.0.1:5061;transport=tls;lr;umr=g>\r\nRoute: <sip:node@127.0.0.1:5061;transport=udp;lr;umr=b>\r\nRoute: <sip:other@10.9.9.9;lr>\r\n",
		"Route: <sip:node@127.0.0.1:5061;transport=tls;lr;umr=g>, <sip:node@127.0.0.1:5061;transport=udp;lr;umr=b>,<sip:other@10.9.9.9;lr>\r\n", 1)
	for pop, want := range map[int]string{1: "Route: <sip:node@127.0.0.1:5061;transport=udp;lr;umr=b>,<sip:other@10.9.9.9;lr>\r\n", 2: "Route: <sip:other@10.9.9.9;lr>\r\n", 3: ""} {
		out, ok := forwardBytes(nil, []byte(raw), nil, pop)
		if !ok {
			t.Fatalf("pop %d: fast path refused a comma-separated route set", pop)
		}
		got := ""
		if i := strings.Index(string(out), "Route: "); i >= 0 {
			got = string(out)[i : i+strings.Index(string(out)[i:], "\r\n")+2]
		}
		if got != want {
			t.Errorf("pop %d: Route line %q, want %q", pop, got, want)
		}
	}
}

func TestCutTopViaRemovesOnlyOurVia(t *testing.T) {
	res := "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKumr.1\r\n" +
		"v: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
	out, ok := cutTopVia(nil, []byte(res))
	if !ok {
		t.Fatal("fast path refused")
	}
	if strings.Contains(string(out), "z9hG4bKumr.1") || !strings.Contains(string(out), "z9hG4bK-1") {
		t.Fatalf("wrong Via removed:\n%s", out)
	}
	multi := strings.Replace(res, "branch=z9hG4bKumr.1\r\n", "branch=z9hG4bKumr.1, SIP/2.0/UDP [::ffff:192.0.2.1]:5060;branch=y\r\n", 1)
	out, ok = cutTopVia(nil, []byte(multi))
	if !ok || strings.Contains(string(out), "z9hG4bKumr.1") || !strings.Contains(string(out), "Via: SIP/2.0/UDP [::ffff:192.0.2.1]:5060;branch=y\r\n") {
		t.Fatalf("first value of a two-value Via line not cut as sent:\n%s", out)
	}
	noLength := strings.Replace(res, "Content-Length: 0\r\n", "", 1)
	if _, ok := cutTopVia(nil, []byte(noLength)); ok {
		t.Fatal("a response without Content-Length must go to the parser, which adds one")
	}
}

func FuzzForwardBytes(f *testing.F) {
	f.Add([]byte(rawInvite), 2)
	f.Add([]byte("SIP/2.0 200 OK\r\nVia: a\r\n\r\n"), 0)
	f.Fuzz(func(t *testing.T, raw []byte, pop int) {
		if pop < 0 || pop > 4 {
			return
		}
		out, ok := forwardBytes(nil, raw, []byte("Via: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"), pop)
		if ok && len(out) < len(raw)-4096 {
			t.Fatalf("output shrank unexpectedly")
		}
		_, _ = cutTopVia(nil, raw)
	})
}
