package proxy

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

const inDialogBye = "BYE sip:um@127.0.0.1:5070;transport=udp SIP/2.0\r\n" +
	"Via: SIP/2.0/TLS gw1.example.com:5061;branch=z9hG4bK-bye1;rport\r\n" +
	"Route: <sip:umrouter@um.example.com:5061;transport=tls;lr;umr=g;gw=gw1;fl=3;dp=main>, <sip:umrouter@um.example.com:5060;transport=udp;lr;umr=b>\r\n" +
	"Max-Forwards: 70\r\n" +
	"From: <sip:5551234@gw1.example.com>;tag=a\r\n" +
	"To: <sip:12345@um.example.com>;tag=b\r\n" +
	"Call-ID: c1\r\n" +
	"CSeq: 2 BYE\r\n" +
	"Content-Length: 0\r\n" +
	"\r\n"

func TestScanInDialogReadsAnAckOrBye(t *testing.T) {
	q, ok := scanRequest([]byte(inDialogBye), "z9hG4bKumr")
	if !ok {
		t.Fatal("a plain in-dialog BYE was not scanned")
	}
	if q.method != sip.BYE || string(q.uriUser) != "um" || string(q.uriHost) != "127.0.0.1" || q.uriPort != 5070 ||
		string(q.viaBranch) != "z9hG4bK-bye1" || string(q.viaHost) != "gw1.example.com" || string(q.callID) != "c1" ||
		string(q.cseqMethod) != "BYE" || q.maxForwards != 70 || !q.toTagged || len(q.routes) != 2 || q.ownVia {
		t.Fatalf("scanned %+v", q)
	}
	s := &Server{cfg: Config{Advertise: "um.example.com"}}
	var pr poppedRoute
	if !s.ownRoute(q.routes[0], &pr) || pr.toward != sideGateway || pr.gateway != "gw1" || pr.flowID != 3 || pr.plan != "main" {
		t.Fatalf("first route read as %+v", pr)
	}
	if !s.ownRoute(q.routes[1], &pr) || pr.toward != sideBackend || pr.count != 2 {
		t.Fatalf("second route read as %+v", pr)
	}
	if s.ownRoute([]byte("<sip:other.example.com;lr>"), &pr) || pr.count != 2 {
		t.Fatal("a route of another host read as ours")
	}
}

// TestScanInDialogLeavesTheRestToTheParser: every shape the fast path does
// not read goes to handleRequest, which refuses or relays it as before.
func TestScanInDialogLeavesTheRestToTheParser(t *testing.T) {
	for name, edit := range map[string]func(string) string{
		"lower-case method": func(m string) string { return strings.Replace(m, "BYE sip:", "bye sip:", 1) },
		"SIP/3.0":           func(m string) string { return strings.Replace(m, " SIP/2.0\r\n", " SIP/3.0\r\n", 1) },
		"tel URI": func(m string) string {
			return strings.Replace(m, "sip:um@127.0.0.1:5070;transport=udp", "tel:+12345", 1)
		},
		"URI with headers": func(m string) string { return strings.Replace(m, ";transport=udp SIP", "?Subject=x SIP", 1) },
		"IPv6 Request-URI": func(m string) string { return strings.Replace(m, "127.0.0.1:5070", "[::1]:5070", 1) },
		"escaped user":     func(m string) string { return strings.Replace(m, "sip:um@", "sip:u%6D@", 1) },
		"two @ in the URI": func(m string) string { return strings.Replace(m, "sip:um@", "sip:um@x@", 1) },
		"password in user": func(m string) string { return strings.Replace(m, "sip:um@", "sip:um:pw@", 1) },
		"two To": func(m string) string {
			return strings.Replace(m, "Call-ID: c1\r\n", "Call-ID: c1\r\nt: <sip:x@y>\r\n", 1)
		},
		"no Max-Forwards":        func(m string) string { return strings.Replace(m, "Max-Forwards: 70\r\n", "", 1) },
		"Max-Forwards not a num": func(m string) string { return strings.Replace(m, "Max-Forwards: 70", "Max-Forwards: x", 1) },
		"no Content-Length":      func(m string) string { return strings.Replace(m, "Content-Length: 0\r\n", "", 1) },
		"Proxy-Require": func(m string) string {
			return strings.Replace(m, "CSeq: 2 BYE\r\n", "CSeq: 2 BYE\r\nProxy-Require: foo\r\n", 1)
		},
		"folded": func(m string) string { return strings.Replace(m, "Call-ID: c1", "Call-ID:\r\n c1", 1) },
		"IPv6 Via": func(m string) string {
			return strings.Replace(m, "gw1.example.com:5061;branch", "[::1]:5061;branch", 1)
		},
		"no Via branch":  func(m string) string { return strings.Replace(m, "branch=z9hG4bK-bye1;", "", 1) },
		"body cut short": func(m string) string { return strings.Replace(m, "Content-Length: 0", "Content-Length: 9", 1) },
	} {
		if _, ok := scanRequest([]byte(edit(inDialogBye)), "z9hG4bKumr"); ok {
			t.Errorf("%s: scanned, want it left to the parser", name)
		}
	}
	if q, ok := scanRequest([]byte(strings.Replace(inDialogBye, "Via: SIP/2.0/TLS", "Via: SIP/2.0/UDP um:5060;branch=z9hG4bKumr-1\r\nVia: SIP/2.0/TLS", 1)), "z9hG4bKumr"); ok && !q.ownVia {
		t.Error("a Via of ours (a loop) not noticed")
	}
	if q, _ := scanRequest([]byte(strings.Replace(inDialogBye, ";tag=b", "", 1)), "z9hG4bKumr"); q.toTagged {
		t.Error("To without tag read as tagged")
	}
}

// FuzzScanInDialog: whatever the fast path scans and sipgo also parses,
// both read alike.
func FuzzScanInDialog(f *testing.F) {
	f.Add([]byte(inDialogBye))
	f.Add([]byte(newCallInvite))
	f.Add([]byte(strings.NewReplacer("BYE sip:", "ACK sip:", "2 BYE", "1 ACK").Replace(inDialogBye)))
	f.Add([]byte(strings.NewReplacer("Via:", "v:", "To:", "t:", "Call-ID:", "i:", "Content-Length:", "l:").Replace(inDialogBye)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		q, ok := scanRequest(raw, "z9hG4bKumr")
		if !ok {
			return
		}
		m, err := sip.ParseMessage(raw)
		if err != nil {
			return // respondLocal then answers from the raw lines
		}
		req, isRequest := m.(*sip.Request)
		if !isRequest {
			t.Fatalf("scanned a response as a request: %q", raw)
		}
		if req.Method != q.method {
			t.Fatalf("method %s, sipgo %s", q.method, req.Method)
		}
		if req.Recipient.Host != string(q.uriHost) || req.Recipient.Port != q.uriPort || req.Recipient.User != string(q.uriUser) {
			t.Fatalf("Request-URI %s@%s:%d, sipgo %s@%s:%d", q.uriUser, q.uriHost, q.uriPort, req.Recipient.User, req.Recipient.Host, req.Recipient.Port)
		}
		if to := req.To(); to != nil && to.Params.Has("tag") != q.toTagged {
			t.Fatalf("To tagged %v, sipgo %v (%q)", q.toTagged, to.Params.Has("tag"), to.Value())
		}
		if mf := req.MaxForwards(); mf != nil && strconv.Itoa(int(mf.Val())) != strconv.Itoa(q.maxForwards) && q.maxForwards >= 0 && q.maxForwards < 256 {
			t.Fatalf("Max-Forwards %d, sipgo %d", q.maxForwards, mf.Val())
		}
	})
}

const newCallInvite = "INVITE sip:12345@um.example.com SIP/2.0\r\n" +
	"Via: SIP/2.0/TLS gw1.example.com:5061;branch=z9hG4bK-inv1;rport, SIP/2.0/TLS pbx.example.com;branch=z9hG4bK-pbx\r\n" +
	"Via: SIP/2.0/TLS phone.example.com;branch=z9hG4bK-ph\r\n" +
	"Max-Forwards: 70\r\n" +
	"From: \"Caller \\\"one\\\"\" <sip:5551234@gw1.example.com>;tag=a\r\n" +
	"To: <sip:12345@um.example.com>\r\n" +
	"Call-ID: c2\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Timestamp: 54\r\n" +
	"Contact: <sip:5551234@gw1.example.com:5061;transport=tls>\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Content-Length: 4\r\n" +
	"\r\n" +
	"v=0\n"

// TestTryingOfAScannedInviteIsSipgosAnswer: the 100 Trying the fast path
// builds from bytes says what sipgo's NewResponseFromRequest would: the
// same Vias (rport and received filled in, RFC 3581), From, To, Call-ID,
// CSeq and Timestamp.
func TestTryingOfAScannedInviteIsSipgosAnswer(t *testing.T) {
	q, ok := scanRequest([]byte(newCallInvite), "z9hG4bKumr")
	if !ok || q.method != sip.INVITE || q.toTagged || len(q.vias) != 2 {
		t.Fatalf("INVITE scanned %v: %+v", ok, q)
	}
	src := netip.MustParseAddrPort("192.0.2.7:40001")
	got, err := sip.ParseMessage(trying(&q, []byte(newCallInvite), src))
	if err != nil {
		t.Fatal(err)
	}
	m, err := sip.ParseMessage([]byte(newCallInvite))
	if err != nil {
		t.Fatal(err)
	}
	req := m.(*sip.Request)
	req.SetSource(src.String())
	want := sip.NewResponseFromRequest(req, 100, "Trying", nil)
	for _, name := range []string{"Via", "From", "To", "Call-ID", "CSeq", "Timestamp", "Content-Length"} {
		var g, w []string
		for _, h := range got.(*sip.Response).GetHeaders(name) {
			g = append(g, h.Value())
		}
		for _, h := range want.GetHeaders(name) {
			w = append(w, h.Value())
		}
		if strings.Join(g, " | ") != strings.Join(w, " | ") {
			t.Errorf("%s:\n got %q\nwant %q", name, g, w)
		}
	}
	if v := got.(*sip.Response).Via(); v == nil || v.Params.Has("rport") == false {
		t.Fatal("no Via with rport")
	} else if rp, _ := v.Params.Get("rport"); rp != "40001" {
		t.Errorf("rport=%q", rp)
	}
}

func TestWellFormedAddress(t *testing.T) {
	for v, want := range map[string]bool{
		`<sip:a@b>;tag=1`:              true,
		`"A \"B\"" <sip:a@b>`:          true,
		`sip:a@b;tag=1`:                true,
		`"A <sip:a@b>`:                 false, // RFC 4475 3.1.2.6
		`<sip:a@b`:                     false,
		`sip:a@b>`:                     false,
		`<sip:a@b> <sip:c@d>`:          false,
		`"<not an address>" <sip:a@b>`: true,
		`<sip:a@b>tag`:                 false,
		`<sip:a@b> ;tag=1`:             true,
	} {
		if got := wellFormedAddress([]byte(v)); got != want {
			t.Errorf("%s: %v, want %v", v, got, want)
		}
	}
}
