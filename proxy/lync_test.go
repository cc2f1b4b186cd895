package proxy

import (
	"crypto/tls"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/umrouter/umrouter/dialplan"
	"github.com/umrouter/umrouter/internal/testpki"
)

const lyncPool = "lyncpool.example.test"

// lyncConfig is a Lync pool on a secured sip-uri plan.
func lyncConfig() (Config, dialplan.Plans) {
	cfg, plans := baseConfig("127.0.0.1:9")
	plans = append(plans, dialplan.Plan{Name: "lync", Security: dialplan.Secured, URIType: dialplan.SIPURI})
	cfg.Gateways = append(cfg.Gateways, Gateway{Name: "lync", Address: lyncPool, Kind: "lync", DialPlan: "lync"})
	return cfg, plans
}

func TestLyncPeerWithSelfSignedCertificateIsRefused(t *testing.T) {
	pki := newTestPKI(t)
	self := testpki.SelfSigned(t, testpki.LeafOptions{CN: lyncPool, DNS: []string{lyncPool}})
	// The operator trusts it explicitly: it passes the handshake, and is
	// still refused, because Lync needs a CA-issued certificate.
	bundle := append(append([]byte(nil), pki.ca.CertPEM...), self.CertPEM...)
	if err := os.WriteFile(pki.caFile, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, plans := lyncConfig()
	p := startProxy(t, pki, cfg, plans)
	c, err := dialGateway(t, p.tlsAddr, pki, &self.TLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(optionsTo(c, "someone"))
	if r := c.response(5 * time.Second); r.StatusCode != 403 {
		t.Fatalf("want 403, got %s", r.StartLine())
	}
	if got := testutil.ToFloat64(p.m.Refusals.WithLabelValues("403", "lync_peer_self_signed")); got != 1 {
		t.Fatalf("refusal counted %v times as lync_peer_self_signed", got)
	}
}

func TestLyncPeerIsRefusedWhileOurCertificateIsSelfSigned(t *testing.T) {
	pki := newTestPKI(t)
	ours := testpki.SelfSigned(t, testpki.LeafOptions{CN: "umrouter", DNS: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	if err := os.WriteFile(pki.srvCert, ours.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pki.srvKey, ours.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	lync := pki.ca.Issue(t, testpki.LeafOptions{CN: lyncPool, DNS: []string{lyncPool}})
	cfg, plans := lyncConfig()
	p := startProxy(t, pki, cfg, plans)
	c, err := dialGateway(t, p.tlsAddr, pki, &lync.TLS, func(tc *tls.Config) { tc.RootCAs = poolOf(ours.Cert) })
	if err != nil {
		t.Fatal(err)
	}
	c.send(optionsTo(c, "someone"))
	if r := c.response(5 * time.Second); r.StatusCode != 403 {
		t.Fatalf("want 403, got %s", r.StartLine())
	}
	if got := testutil.ToFloat64(p.m.Refusals.WithLabelValues("403", "own_certificate_self_signed")); got != 1 {
		t.Fatalf("refusal counted %v times as own_certificate_self_signed", got)
	}
	// A gateway that is not Lync is served with the same certificate.
	g, err := dialGateway(t, p.tlsAddr, pki, &pki.gw.TLS, func(tc *tls.Config) { tc.RootCAs = poolOf(ours.Cert) })
	if err != nil {
		t.Fatal(err)
	}
	g.send(optionsTo(g, ""))
	if r := g.response(5 * time.Second); r.StatusCode != 200 {
		t.Fatalf("non-Lync gateway: want 200, got %s", r.StartLine())
	}
}
