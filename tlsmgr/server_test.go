package tlsmgr

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/testpki"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

var tlsVersions = []struct {
	name string
	v    uint16
}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}}

func TestServerAcceptsClientChainingToClientCA(t *testing.T) {
	f := newFixture(t)
	m := f.open(t)
	srv := serve(t, m.ServerConfig())
	client := f.ca.Issue(t, testpki.LeafOptions{CN: "gw1.example.com", DNS: []string{"gw1.example.com"}})
	for _, v := range tlsVersions {
		t.Run(v.name, func(t *testing.T) {
			cfg := clientOf(client, f.ca)
			cfg.MaxVersion = v.v
			cs, err := dial(t, srv.addr, cfg)
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			h := srv.next(t)
			if h.err != nil {
				t.Fatalf("server: %v", h.err)
			}
			if got := h.state.PeerCertificates[0].SerialNumber; got.Cmp(client.Cert.SerialNumber) != 0 {
				t.Errorf("server saw peer serial %x, want %x", got, client.Cert.SerialNumber)
			}
			if got := cs.PeerCertificates[0].SerialNumber; got.Cmp(f.server.Cert.SerialNumber) != 0 {
				t.Errorf("client saw server serial %x, want %x", got, f.server.Cert.SerialNumber)
			}
		})
	}
}

func TestServerRefusesBadClientsWithReason(t *testing.T) {
	f := newFixture(t)
	other := testpki.NewCA(t, "Other Root")
	revoked := f.ca.Issue(t, testpki.LeafOptions{CN: "revoked.example.com"})
	f.writeCRL(t, revoked)
	m := f.open(t)
	srv := serve(t, m.ServerConfig())
	now := time.Now()

	tests := []struct {
		name       string
		client     *testpki.Leaf
		minV, maxV uint16
		wantReason string
	}{
		{name: "without certificate", client: nil, wantReason: ReasonNoCertificate},
		{name: "issued by another CA", client: other.Issue(t, testpki.LeafOptions{}), wantReason: ReasonUnknownCA},
		{name: "self-signed", client: testpki.SelfSigned(t, testpki.LeafOptions{}), wantReason: ReasonUnknownCA},
		{name: "expired", wantReason: ReasonExpired, client: f.ca.Issue(t, testpki.LeafOptions{
			NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})},
		{name: "not yet valid", wantReason: ReasonNotYetValid, client: f.ca.Issue(t, testpki.LeafOptions{
			NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})},
		{name: "revoked by CRL", client: revoked, wantReason: ReasonRevoked},
		{name: "server-auth only key usage", wantReason: ReasonBadKeyUsage, client: f.ca.Issue(t, testpki.LeafOptions{
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})},
		{name: "TLS 1.1 client", client: f.ca.Issue(t, testpki.LeafOptions{}),
			minV: tls.VersionTLS10, maxV: tls.VersionTLS11, wantReason: ReasonProtocolVersion},
	}
	for _, tt := range tests {
		for _, v := range tlsVersions {
			if tt.maxV != 0 && v.v != tls.VersionTLS12 {
				continue // the version case pins its own versions
			}
			t.Run(tt.name+"/"+v.name, func(t *testing.T) {
				cfg := clientOf(tt.client, f.ca)
				cfg.MinVersion, cfg.MaxVersion = tt.minV, v.v
				if tt.maxV != 0 {
					cfg.MaxVersion = tt.maxV
				}
				_, cerr := dial(t, srv.addr, cfg)
				if cerr == nil {
					t.Fatal("client: handshake and read succeeded, want refusal")
				}
				h := srv.next(t)
				if h.err == nil {
					t.Fatal("server accepted the client")
				}
				if got := HandshakeFailureReason(h.err); got != tt.wantReason {
					t.Errorf("server reason = %q, want %q (err: %v)", got, tt.wantReason, h.err)
				}
				if tt.wantReason != ReasonNoCertificate && tt.wantReason != ReasonProtocolVersion {
					if _, ok := errors.AsType[*VerifyError](h.err); !ok {
						t.Errorf("server error %v does not wrap *VerifyError", h.err)
					}
				}
			})
		}
	}
}

func TestServerWithoutClientCARefusesEveryPeerAndWarns(t *testing.T) {
	f := newFixture(t)
	f.cfg.ClientCAFile = ""
	core, logs := observer.New(zapcore.InfoLevel)
	m, err := Open(f.cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("every TLS peer will be refused").Len() != 1 {
		t.Errorf("no WARN about the empty client CA bundle; logs: %v", logs.All())
	}
	srv := serve(t, m.ServerConfig())
	if _, err := dial(t, srv.addr, clientOf(f.ca.Issue(t, testpki.LeafOptions{}), f.ca)); err == nil {
		t.Fatal("client accepted")
	}
	if got := HandshakeFailureReason(srv.next(t).err); got != ReasonUnknownCA {
		t.Errorf("reason = %q, want unknown_ca", got)
	}
}

func TestServerAdvertisesCurrentClientCAs(t *testing.T) {
	f := newFixture(t)
	m := f.open(t)
	srv := serve(t, m.ServerConfig())
	client := f.ca.Issue(t, testpki.LeafOptions{})
	var advertised [][]byte
	cfg := clientOf(nil, f.ca)
	cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		advertised = cri.AcceptableCAs
		return &client.TLS, nil
	}
	if _, err := dial(t, srv.addr, cfg); err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	if len(advertised) != 1 || string(advertised[0]) != string(f.ca.Cert.RawSubject) {
		t.Errorf("advertised CAs = %q, want the client CA's subject", advertised)
	}
}

func TestServerHonoursMinVersion13(t *testing.T) {
	f := newFixture(t)
	f.cfg.MinVersion = "1.3"
	m := f.open(t)
	srv := serve(t, m.ServerConfig())
	cfg := clientOf(f.ca.Issue(t, testpki.LeafOptions{}), f.ca)
	cfg.MaxVersion = tls.VersionTLS12
	if _, err := dial(t, srv.addr, cfg); err == nil {
		t.Fatal("TLS 1.2 client accepted with min_version 1.3")
	}
	if got := HandshakeFailureReason(srv.next(t).err); got != ReasonProtocolVersion {
		t.Errorf("reason = %q, want protocol_version", got)
	}
}

func TestClientSideSeesRefusalReasons(t *testing.T) {
	// The peer's view of our refusals: crypto/tls alerts classified from
	// their text, which a Go upgrade could reword.
	f := newFixture(t)
	m := f.open(t)
	srv := serve(t, m.ServerConfig())
	cfg := clientOf(nil, f.ca)
	cfg.MinVersion = tls.VersionTLS13
	_, err := dial(t, srv.addr, cfg)
	srv.next(t)
	if got := HandshakeFailureReason(err); got != ReasonNoCertificate {
		t.Errorf("TLS 1.3 client without certificate: reason %q (err %v), want no_certificate", got, err)
	}
	cfg = clientOf(f.ca.Issue(t, testpki.LeafOptions{}), f.ca)
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	_, err = dial(t, srv.addr, cfg)
	srv.next(t)
	if got := HandshakeFailureReason(err); got != ReasonProtocolVersion {
		t.Errorf("TLS 1.1 client: reason %q (err %v), want protocol_version", got, err)
	}
	if err != nil && !strings.Contains(err.Error(), "protocol version") {
		t.Logf("client error text: %v", err)
	}
}
