package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/umrouter/umrouter/internal/sipptest"
	"github.com/umrouter/umrouter/internal/testpki"
)

func optionsTo(c *sipClient, user string) string {
	n := c.seq.Add(1)
	ruri := "sip:127.0.0.1"
	if user != "" {
		ruri = "sip:" + user + "@127.0.0.1"
	}
	return fmt.Sprintf("OPTIONS %s SIP/2.0\r\nVia: SIP/2.0/TLS %s;branch=z9hG4bK-opt-%d\r\nMax-Forwards: 70\r\n"+
		"From: <sip:ka@%s>;tag=o%d\r\nTo: <%s>\r\nCall-ID: opt-%d-%d\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
		ruri, c.localAddr(), n, gwName, n, ruri, n, time.Now().UnixNano())
}

func TestBadClientCertificatesAreRefusedAtHandshake(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9") // never reached
	p := startProxy(t, pki, cfg, plans)
	other := testpki.NewCA(t, "some other CA")
	now := time.Now()
	cases := []struct {
		name   string
		cert   *tls.Certificate
		tweak  func(*tls.Config)
		reason string
	}{
		{"no client certificate", nil, nil, "no_certificate"},
		{"certificate from another CA", &other.Issue(t, testpki.LeafOptions{DNS: []string{gwName}}).TLS, nil, "unknown_ca"},
		{"expired certificate", &pki.ca.Issue(t, testpki.LeafOptions{DNS: []string{gwName}, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)}).TLS, nil, "expired"},
		{"TLS 1.1 client", &pki.gw.TLS, func(c *tls.Config) { c.MinVersion = tls.VersionTLS10; c.MaxVersion = tls.VersionTLS11 }, "protocol_version"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := testutil.ToFloat64(p.m.Handshakes.WithLabelValues("refused", tc.reason))
			c, err := dialGateway(t, p.tlsAddr, pki, tc.cert, tc.tweak)
			if err == nil {
				// TLS 1.3: the client learns of the refusal at its first read.
				_, _ = c.conn.Write([]byte(optionsTo(c, "")))
				if err := c.closed(5 * time.Second); err == nil || !isAlertOrClose(err) {
					t.Fatalf("want the connection refused, got %v", err)
				}
			}
			waitFor(t, "handshake refusal counted with reason "+tc.reason, func() bool {
				return testutil.ToFloat64(p.m.Handshakes.WithLabelValues("refused", tc.reason)) == before+1
			})
		})
	}
}

func isAlertOrClose(err error) bool {
	s := err.Error()
	return strings.Contains(s, "tls:") || strings.Contains(s, "EOF") || strings.Contains(s, "reset") || strings.Contains(s, "closed")
}

// waitFor polls cond until it holds, failing the test after 5 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestValidCertificateOfUnconfiguredPeerGets403AndIsDisconnected(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9")
	p := startProxy(t, pki, cfg, plans)
	stranger := pki.ca.Issue(t, testpki.LeafOptions{DNS: []string{"stranger.example.test"}})
	c, err := dialGateway(t, p.tlsAddr, pki, &stranger.TLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := c.invite("12345")
	c.send(inv)
	r := c.response(5 * time.Second)
	if r.StatusCode != 403 {
		t.Fatalf("want 403, got %s", r.StartLine())
	}
	if err := c.closed(5 * time.Second); err == nil {
		t.Fatal("connection stayed open after 403")
	}
	if got := testutil.ToFloat64(p.m.Refusals.WithLabelValues("403", "not_a_gateway")); got != 1 {
		t.Fatalf("refusal not counted: %v", got)
	}
}

func TestNoBackendUpGets503WithRetryAfter(t *testing.T) {
	// A TCP port that refuses connections: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	pki := newTestPKI(t)
	cfg, plans := baseConfig(dead)
	cfg.Backends.Transport = "tcp"
	cfg.Backends.AllowPlaintext = true
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	inv, _ := c.invite("12345")
	c.send(inv)
	r := c.finalResponse(10 * time.Second)
	if r.StatusCode != 503 {
		t.Fatalf("want 503, got %s", r.StartLine())
	}
	if r.GetHeader("Retry-After") == nil {
		t.Fatal("503 without Retry-After")
	}
}

func TestMaxForwardsZeroGets483(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9")
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	inv, _ := c.invite("12345")
	c.send(strings.Replace(inv, "Max-Forwards: 70", "Max-Forwards: 0", 1))
	if r := c.response(5 * time.Second); r.StatusCode != 483 {
		t.Fatalf("want 483, got %s", r.StartLine())
	}
}

func TestOptionsToUmrouterItselfGets200(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9")
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	c.send(optionsTo(c, ""))
	if r := c.response(5 * time.Second); r.StatusCode != 200 {
		t.Fatalf("want 200, got %s", r.StartLine())
	}
}

func TestPlainTCPOnSIPSecuredPlanGets403TLSRequired(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9")
	cfg.StartupMode = "dual"
	cfg.Gateways[0].Address = "127.0.0.1" // identified by source address on TCP
	p := startProxy(t, pki, cfg, plans)
	nc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.s.tcpPort.Load()))
	if err != nil {
		t.Fatal(err)
	}
	c := newSIPClient(t, nc)
	inv, _ := c.invite("12345")
	c.send(inv)
	r := c.response(5 * time.Second)
	if r.StatusCode != 403 {
		t.Fatalf("want 403, got %s", r.StartLine())
	}
	w := r.GetHeader("Warning")
	if w == nil || !strings.Contains(w.Value(), `399 127.0.0.1 "TLS required"`) {
		t.Fatalf("want Warning: 399 127.0.0.1 \"TLS required\", got %v", w)
	}
}

func TestCancelOfRingingCallIsRelayedAndAnswered487AtOnce(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas_ringing_cancel.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	inv, d := c.invite("12345")
	c.send(inv)
	for {
		r := c.response(5 * time.Second)
		if r.StatusCode == 180 {
			break
		}
		if r.StatusCode != 100 {
			t.Fatalf("want 100/180, got %s", r.StartLine())
		}
	}
	branch := "z9hG4bK-inv-" + d.callID
	c.send(fmt.Sprintf("CANCEL sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS %s;branch=%s\r\nMax-Forwards: 70\r\n"+
		"From: <sip:caller@%s>;tag=%s\r\nTo: <sip:12345@127.0.0.1>\r\nCall-ID: %s\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
		c.localAddr(), branch, gwName, d.fromTag, d.callID))
	got := map[string]int{}
	var inviteTag string
	for len(got) < 2 {
		r := c.response(5 * time.Second)
		got[string(r.CSeq().MethodName)] = r.StatusCode
		if r.CSeq().MethodName == "INVITE" {
			inviteTag, _ = r.To().Params.Get("tag")
		}
	}
	if got["CANCEL"] != 200 || got["INVITE"] != 487 {
		t.Fatalf("want 200 to CANCEL and 487 to INVITE, got %v", got)
	}
	// The 487 is the backend's own answer to the relayed CANCEL (it carries
	// SIPp's To-tag), not one that umrouter made up when a timer fired.
	if !strings.Contains(inviteTag, "SIPpTag02") {
		t.Fatalf("487 did not come from the backend: To-tag %q", inviteTag)
	}
	c.send(fmt.Sprintf("ACK sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS %s;branch=%s\r\nMax-Forwards: 70\r\n"+
		"From: <sip:caller@%s>;tag=%s\r\nTo: <sip:12345@127.0.0.1>;tag=x\r\nCall-ID: %s\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
		c.localAddr(), branch, gwName, d.fromTag, d.callID))
	if st, err := uas.WaitSuccessful(1, 10*time.Second); err != nil {
		t.Fatalf("SIPp UAS did not complete the cancelled call: %v (%+v)", err, st)
	}
}

// TestReturningGatewayResumesItsTLSSession: a gateway reconnecting with the
// session ticket of its previous connection does an abbreviated handshake
// (issue 7: resumption makes a returning gateway's reconnect cheap) and is
// still identified and served.
func TestReturningGatewayResumesItsTLSSession(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9")
	p := startProxy(t, pki, cfg, plans)
	cache := tls.NewLRUClientSessionCache(4)
	for i, wantResumed := range []bool{false, true} {
		c, err := dialGateway(t, p.tlsAddr, pki, &pki.gw.TLS, func(tc *tls.Config) { tc.ClientSessionCache = cache })
		if err != nil {
			t.Fatal(err)
		}
		c.send(optionsTo(c, "")) // TLS 1.3 tickets arrive with the first read
		if r := c.response(5 * time.Second); r.StatusCode != 200 {
			t.Fatalf("connection %d: %s", i, r.StartLine())
		}
		if got := c.conn.(*tls.Conn).ConnectionState().DidResume; got != wantResumed {
			t.Fatalf("connection %d: resumed = %v, want %v", i, got, wantResumed)
		}
		c.conn.Close()
	}
}

// A response is never answered, so one umrouter cannot relay is counted by
// why: from a peer whose requests are refused, or for a branch umrouter
// never sent.
func TestDroppedResponsesAreCounted(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9") // never reached
	p := startProxy(t, pki, cfg, plans)
	response := func(c *sipClient, branch string) string {
		return fmt.Sprintf("SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=%s\r\nFrom: <sip:a@%s>;tag=1\r\n"+
			"To: <sip:b@127.0.0.1>;tag=2\r\nCall-ID: dropped-%s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", branch, gwName, branch)
	}
	stranger := pki.ca.Issue(t, testpki.LeafOptions{DNS: []string{"stranger.example.test"}})
	s, err := dialGateway(t, p.tlsAddr, pki, &stranger.TLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.send(response(s, p.s.branchPrefix+"x1"))
	waitFor(t, "the refused peer's response counted", func() bool {
		return testutil.ToFloat64(p.m.DroppedResponses.WithLabelValues("refused_peer")) == 1
	})
	gw := p.gateway(t)
	gw.send(response(gw, "z9hG4bK-not-umrouters"))
	waitFor(t, "the response for another branch counted", func() bool {
		return testutil.ToFloat64(p.m.DroppedResponses.WithLabelValues("not_ours")) == 1
	})
	gw.send(optionsTo(gw, ""))
	if r := gw.response(5 * time.Second); r.StatusCode != 200 {
		t.Fatalf("OPTIONS after the dropped response: %s", r.StartLine())
	}
}
