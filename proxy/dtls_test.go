package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/umrouter/umrouter/internal/sipptest"
	"github.com/umrouter/umrouter/internal/testpki"
)

// dialDTLS opens a DTLS association to addr presenting cert.
func dialDTLS(t *testing.T, addr string, pki *testPKI, cert *tls.Certificate) (*sipClient, *dtls.Conn, error) {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &dtls.Config{
		RootCAs:              poolOf(pki.ca.Cert),
		ServerName:           "localhost",
		ExtendedMasterSecret: dtls.RequireExtendedMasterSecret,
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	dc, err := dtls.Dial("udp", ua, cfg)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := dc.HandshakeContext(ctx); err != nil {
		dc.Close()
		return nil, nil, err
	}
	buf := make([]byte, 65536)
	c := startSIPClient(t, dc, "DTLS", func() ([]byte, error) {
		n, err := dc.Read(buf)
		if err != nil {
			return nil, err
		}
		return append([]byte(nil), buf[:n]...), nil
	})
	return c, dc, nil
}

// startDTLSProxy runs umrouter with a DTLS listener and certificate files
// it can reload.
func startDTLSProxy(t *testing.T, pki *testPKI, backends ...string) (*testProxy, string) {
	t.Helper()
	cfg, plans := baseConfig(backends...)
	cfg.Listen.DTLS = fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	p := startProxy(t, pki, cfg, plans)
	return p, cfg.Listen.DTLS
}

func TestDTLSCallsCompleteLikeTLSCalls(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	p, addr := startDTLSProxy(t, pki, uas.Addr())
	c, _, err := dialDTLS(t, addr, pki, &pki.gw.TLS)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if err := placeCall(c); err != nil {
			t.Fatalf("call %d over DTLS: %v", i, err)
		}
	}
	if _, err := uas.WaitSuccessful(20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(p.m.Connections.WithLabelValues("dtls", "gateway")); got != 1 {
		t.Fatalf("umrouter_connections{transport=dtls} = %v, want 1", got)
	}
}

func TestDTLSCarriesA3KBInvite(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	_, addr := startDTLSProxy(t, pki, uas.Addr())
	c, _, err := dialDTLS(t, addr, pki, &pki.gw.TLS)
	if err != nil {
		t.Fatal(err)
	}
	padding := "X-Padding: " + strings.Repeat("p", 2600) + "\r\n"
	inv, _ := c.invite("12345", padding)
	if len(inv) < 3000 {
		t.Fatalf("INVITE is %d bytes, want at least 3 kB", len(inv))
	}
	c.send(inv)
	if r := c.finalResponse(10 * time.Second); r.StatusCode != 200 {
		t.Fatalf("3 kB INVITE over DTLS: %s", r.StartLine())
	}
}

func TestDTLSRefusesWrongCAAndUnknownName(t *testing.T) {
	pki := newTestPKI(t)
	p, addr := startDTLSProxy(t, pki, "127.0.0.1:9")
	other := testpki.NewCA(t, "other CA").Issue(t, testpki.LeafOptions{DNS: []string{gwName}})
	if _, _, err := dialDTLS(t, addr, pki, &other.TLS); err == nil {
		t.Fatal("a certificate from another CA completed a DTLS handshake")
	}
	waitFor(t, "DTLS refusal counted as unknown_ca", func() bool {
		return testutil.ToFloat64(p.m.Handshakes.WithLabelValues("refused", "unknown_ca")) == 1
	})
	stranger := pki.ca.Issue(t, testpki.LeafOptions{DNS: []string{"stranger.example.test"}})
	c, _, err := dialDTLS(t, addr, pki, &stranger.TLS)
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := c.invite("12345")
	c.send(inv)
	if r := c.response(5 * time.Second); r.StatusCode != 403 {
		t.Fatalf("unconfigured DTLS peer: want 403, got %s", r.StartLine())
	}
}

func TestDTLSPicksUpACertificateSwapOnTheNextAssociation(t *testing.T) {
	pki := newTestPKI(t)
	p, addr := startDTLSProxy(t, pki, "127.0.0.1:9")
	serial := func() string {
		_, dc, err := dialDTLS(t, addr, pki, &pki.gw.TLS)
		if err != nil {
			t.Fatal(err)
		}
		defer dc.Close()
		st, _ := dc.ConnectionState()
		// The whole certificate: its first 16 bytes hold one byte of the
		// serial, so two certificates agreed there once in 256 runs.
		return fmt.Sprintf("%x", st.PeerCertificates[0])
	}
	before := serial()
	fresh := pki.ca.Issue(t, testpki.LeafOptions{CN: "umrouter", DNS: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err := os.WriteFile(pki.srvCert, fresh.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pki.srvKey, fresh.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.certs.Reload(); err != nil {
		t.Fatal(err)
	}
	if after := serial(); after == before {
		t.Fatal("the next DTLS association still got the old certificate")
	}
}

// TestDTLSAssociationOverTheRateIsNotReadForAWhile: a DTLS association
// refused for its gateway's rate is not read for a while, as a TLS
// connection is (TestConnectionOverTheRateIsNotReadForAWhile), so a flood
// over DTLS also costs one refusal per pause rather than one per datagram.
func TestDTLSAssociationOverTheRateIsNotReadForAWhile(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	cfg.Limits.RequestsPerSecond = 1 // a burst of 2
	cfg.Listen.DTLS = fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	startProxy(t, pki, cfg, plans)
	c, _, err := dialDTLS(t, cfg.Listen.DTLS, pki, &pki.gw.TLS)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // one record each: the third is over the rate
		inv, _ := c.invite("12345")
		c.send(inv)
	}
	requireReadAfterPause(t, c, awaitRateRefusal(c))
}
