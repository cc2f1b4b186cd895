package proxy

import (
	"bufio"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/umrouter/umrouter/internal/testpki"
)

// tlsUAS is a minimal backend UAS over mutual TLS. Debian's SIPp is built
// without TLS, so this stands in for a UM server on TLS; it answers INVITE
// with 180 and 200, absorbs ACK and answers BYE, and records the client
// certificates it saw.
type tlsUAS struct {
	ln        net.Listener
	mu        sync.Mutex
	clientCNs []string
	byes      atomic.Int64
	invites   atomic.Int64
}

func startTLSUAS(t *testing.T, ca *testpki.CA, leaf *testpki.Leaf) *tlsUAS {
	t.Helper()
	cfg := &tls.Config{
		Certificates: []tls.Certificate{leaf.TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    poolOf(ca.Cert),
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	u := &tlsUAS{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c.(*tls.Conn))
		}
	}()
	return u
}

func (u *tlsUAS) addr() string { return u.ln.Addr().String() }

func (u *tlsUAS) serve(c *tls.Conn) {
	defer c.Close()
	if err := c.Handshake(); err != nil {
		return
	}
	st := c.ConnectionState()
	u.mu.Lock()
	u.clientCNs = append(u.clientCNs, st.PeerCertificates[0].Subject.CommonName)
	u.mu.Unlock()
	fr := frameReader{r: bufio.NewReader(c), maxBytes: 1 << 16}
	for {
		b, err := fr.next()
		if err != nil {
			return
		}
		m, err := sip.ParseMessage(b)
		if err != nil {
			return
		}
		req, ok := m.(*sip.Request)
		if !ok {
			continue
		}
		switch req.Method {
		case sip.INVITE:
			u.invites.Add(1)
			ring := sip.NewResponseFromRequest(req, 180, "Ringing", nil)
			tag, _ := ring.To().Params.Get("tag")
			ok := sip.NewResponseFromRequest(req, 200, "OK", []byte(testSDP))
			ok.To().Params.Add("tag", tag)
			ok.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "um", Host: "127.0.0.1", Port: c.LocalAddr().(*net.TCPAddr).Port, UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}})
			ok.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			_, _ = c.Write([]byte(ring.String() + ok.String()))
		case sip.BYE:
			u.byes.Add(1)
			_, _ = c.Write([]byte(sip.NewResponseFromRequest(req, 200, "OK", nil).String()))
		}
	}
}

func TestCallsReachATLSBackendThatUmrouterVerifies(t *testing.T) {
	pki := newTestPKI(t)
	uas := startTLSUAS(t, pki.ca, pki.ca.Issue(t, testpki.LeafOptions{CN: "um1", IPs: []net.IP{net.ParseIP("127.0.0.1")}}))
	cfg, plans := baseConfig(uas.addr())
	cfg.Backends.Transport = "tls"
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	for i := 0; i < 20; i++ {
		if err := placeCall(c); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if n := uas.byes.Load(); n != 20 {
		t.Fatalf("backend saw %d BYEs, want 20", n)
	}
	uas.mu.Lock()
	defer uas.mu.Unlock()
	if len(uas.clientCNs) == 0 || uas.clientCNs[0] != "umrouter" {
		t.Fatalf("backend saw client certificates %v, want umrouter's", uas.clientCNs)
	}
}

func TestBackendWithUntrustedCertificateIsNotUsed(t *testing.T) {
	pki := newTestPKI(t)
	rogueCA := testpki.NewCA(t, "rogue CA")
	uas := startTLSUAS(t, pki.ca, rogueCA.Issue(t, testpki.LeafOptions{CN: "um1", IPs: []net.IP{net.ParseIP("127.0.0.1")}}))
	cfg, plans := baseConfig(uas.addr())
	cfg.Backends.Transport = "tls"
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	inv, _ := c.invite("12345")
	c.send(inv)
	if r := c.finalResponse(10 * time.Second); r.StatusCode != 503 {
		t.Fatalf("want 503 (the only backend is untrusted), got %s", r.StartLine())
	}
}
