package proxy

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

const scannedOK = "SIP/2.0 200 OK\r\n" +
	"Via: SIP/2.0/UDP um.example.com:5060;branch=z9hG4bKumr-1a;fl=7;rport=5060;received=127.0.0.1\r\n" +
	"Via: SIP/2.0/TLS gw1.example.com:5061;branch=z9hG4bK-gw\r\n" +
	"Record-Route: <sip:um@um.example.com:5060;transport=udp;lr;umr=b>\r\n" +
	"From: <sip:5551234@gw1.example.com>;tag=a\r\n" +
	"To: <sip:12345@um.example.com>;tag=b\r\n" +
	"Call-ID: c1\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Contact: <sip:um@127.0.0.1:5070>\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Retry-After: 30 (later)\r\n" +
	"Content-Length: 4\r\n" +
	"\r\n" +
	"v=0\n"

func TestScanResponseReadsWhatRelayingNeeds(t *testing.T) {
	r, ok := scanResponse([]byte(scannedOK))
	if !ok {
		t.Fatal("a plain 200 was not scanned")
	}
	if r.code != 200 || r.branch != "z9hG4bKumr-1a" || r.flowID != "7" || string(r.cseqMethod) != "INVITE" ||
		string(r.contentType) != "application/sdp" || string(r.body) != "v=0\n" || retryAfterValue(r.retryAfter, 0).Seconds() != 30 {
		t.Fatalf("scanned %+v", r)
	}
}

// TestScanResponseLeavesOtherShapesToTheParser: every shape the scan does
// not read goes to sipgo's parser, which handles (or refuses) it as before.
func TestScanResponseLeavesOtherShapesToTheParser(t *testing.T) {
	for name, edit := range map[string]func(string) string{
		"a request":            func(m string) string { return "INVITE sip:a@b SIP/2.0\r\n" + m[strings.Index(m, "\r\n")+2:] },
		"SIP/3.0":              func(m string) string { return strings.Replace(m, "SIP/2.0 200", "SIP/3.0 200", 1) },
		"status of two digits": func(m string) string { return strings.Replace(m, "200 OK", "20 OK", 1) },
		"status 099":           func(m string) string { return strings.Replace(m, "200 OK", "099 OK", 1) },
		"folded line":          func(m string) string { return strings.Replace(m, "Call-ID: c1\r\n", "Call-ID:\r\n c1\r\n", 1) },
		"no Via": func(m string) string {
			return strings.NewReplacer("Via: SIP/2.0/UDP", "X-Via: a", "Via: SIP/2.0/TLS", "X-Via: b").Replace(m)
		},
		"two CSeq": func(m string) string {
			return strings.Replace(m, "CSeq: 1 INVITE\r\n", "CSeq: 1 INVITE\r\nCSeq: 2 BYE\r\n", 1)
		},
		"no Content-Length":   func(m string) string { return strings.Replace(m, "Content-Length: 4\r\n", "", 1) },
		"body cut short":      func(m string) string { return strings.Replace(m, "Content-Length: 4", "Content-Length: 40", 1) },
		"no branch":           func(m string) string { return strings.Replace(m, "branch=z9hG4bKumr-1a;", "", 1) },
		"CSeq without method": func(m string) string { return strings.Replace(m, "CSeq: 1 INVITE", "CSeq: 1", 1) },
		"no blank line":       func(m string) string { return m[:strings.Index(m, "\r\n\r\n")+2] },
	} {
		if _, ok := scanResponse([]byte(edit(scannedOK))); ok {
			t.Errorf("%s: scanned, want it left to the parser", name)
		}
	}
}

func TestScanResponseTakesTheFirstValueOfACommaSeparatedVia(t *testing.T) {
	m := strings.Replace(scannedOK, "fl=7;rport=5060;received=127.0.0.1\r\nVia: ", "fl=7 , ", 1)
	r, ok := scanResponse([]byte(m))
	if !ok || r.branch != "z9hG4bKumr-1a" || r.flowID != "7" {
		t.Fatalf("scanned %v %+v", ok, r)
	}
}

// FuzzScanResponse: whatever the scan accepts and sipgo also parses, both
// read alike; the scan never reads past the message.
func FuzzScanResponse(f *testing.F) {
	f.Add([]byte(scannedOK))
	f.Add([]byte(strings.Replace(scannedOK, "Via: ", "v: ", 2)))
	f.Add([]byte("SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP h;BRANCH=x\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, ok := scanResponse(raw)
		if !ok {
			return
		}
		m, err := sip.ParseMessage(raw)
		if err != nil {
			return // relaying never needs the model for these; model() then reports nil
		}
		res, isResponse := m.(*sip.Response)
		if !isResponse {
			t.Fatalf("scanned a request as a response: %q", raw)
		}
		if res.StatusCode != r.code {
			t.Fatalf("code %d, sipgo %d", r.code, res.StatusCode)
		}
		if res.CSeq() != nil && !strings.EqualFold(strings.TrimSpace(string(res.CSeq().MethodName)), string(r.cseqMethod)) {
			t.Fatalf("CSeq method %q, sipgo %q", r.cseqMethod, res.CSeq().MethodName)
		}
	})
}

// TestOurHeadersParseBack: the Via and Record-Route lines built as bytes
// are read back by sipgo (the next hop's view) as umrouter means them.
func TestOurHeadersParseBack(t *testing.T) {
	for _, advertise := range []string{"um.example.com", "::1"} {
		s := &Server{cfg: Config{Advertise: advertise, NodeName: "um-1"}}
		g := &Gateway{Name: "gw1"}
		b := []byte("OPTIONS sip:x@y SIP/2.0\r\n")
		b = s.appendVia(b, "TLS", "z9hG4bKumr-9", nil)
		b = s.appendRecordRoute(b, sideGateway, "TLS", udpFlow{}, g, "main")
		b = s.appendRecordRoute(b, sideBackend, "TCP", udpFlow{}, g, "main")
		b = append(b, "From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"...)
		m, err := sip.ParseMessage(b)
		if err != nil {
			t.Fatalf("%s: %v\n%s", advertise, err, b)
		}
		req := m.(*sip.Request)
		v := req.Via()
		if br, _ := v.Params.Get("branch"); br != "z9hG4bKumr-9" || v.Transport != "TLS" || strings.Trim(v.Host, "[]") != advertise || !v.Params.Has("rport") {
			t.Errorf("%s: Via %s", advertise, v.Value())
		}
		rr := req.GetHeaders("Record-Route")
		if len(rr) != 2 {
			t.Fatalf("%s: %d Record-Route", advertise, len(rr))
		}
		top := rr[0].(*sip.RecordRouteHeader).Address
		if u, _ := top.UriParams.Get(ourRouteParam); u != "g" || top.User != s.cfg.NodeName || !s.isOurHost(top.Host) || !top.UriParams.Has("lr") {
			t.Errorf("%s: Record-Route %s", advertise, top.String())
		}
		if gw, _ := top.UriParams.Get("gw"); gw != "gw1" {
			t.Errorf("%s: gw=%q", advertise, gw)
		}
		if dp, _ := top.UriParams.Get("dp"); dp != "main" {
			t.Errorf("%s: dp=%q", advertise, dp)
		}
		if u, _ := rr[1].(*sip.RecordRouteHeader).Address.UriParams.Get(ourRouteParam); u != "b" {
			t.Errorf("%s: second Record-Route %s", advertise, rr[1].Value())
		}
	}
}
