package tlsmgr

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/testpki"
)

// backend is a TLS server that verifies our client certificate against ca
// with crypto/tls's own verification, as an independent peer would.
func backend(t *testing.T, leaf *testpki.Leaf, ca *testpki.CA) *tlsServer {
	t.Helper()
	return serve(t, &tls.Config{
		Certificates: []tls.Certificate{leaf.TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool(ca),
	})
}

func TestClientConfigVerifiesBackendAndPresentsOurCertificate(t *testing.T) {
	f := newFixture(t)
	m := f.open(t)
	other := testpki.NewCA(t, "Other Root")
	now := time.Now()
	tests := []struct {
		name       string
		backend    *testpki.Leaf
		serverName string
		wantReason string // "" for success
	}{
		{"backend named by DNS SAN", f.ca.Issue(t, testpki.LeafOptions{DNS: []string{"um1.example.com"}}), "um1.example.com", ""},
		{"backend named by IP SAN", f.ca.Issue(t, testpki.LeafOptions{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}), "127.0.0.1", ""},
		{"backend name is case-insensitive", f.ca.Issue(t, testpki.LeafOptions{DNS: []string{"um1.example.com"}}), "UM1.Example.com", ""},
		{"backend of another CA", other.Issue(t, testpki.LeafOptions{DNS: []string{"um1.example.com"}}), "um1.example.com", ReasonUnknownCA},
		{"backend certificate naming another host", f.ca.Issue(t, testpki.LeafOptions{DNS: []string{"um2.example.com"}}), "um1.example.com", ReasonOther},
		{"backend IP not in SANs", f.ca.Issue(t, testpki.LeafOptions{DNS: []string{"um1.example.com"}}), "127.0.0.1", ReasonOther},
		{"expired backend", f.ca.Issue(t, testpki.LeafOptions{DNS: []string{"um1.example.com"},
			NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)}), "um1.example.com", ReasonExpired},
		{"backend with client-auth only usage", f.ca.Issue(t, testpki.LeafOptions{DNS: []string{"um1.example.com"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}), "um1.example.com", ReasonBadKeyUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := backend(t, tt.backend, f.ca)
			_, err := dial(t, srv.addr, m.ClientConfig(tt.serverName))
			h := srv.next(t)
			if tt.wantReason == "" {
				if err != nil || h.err != nil {
					t.Fatalf("client err %v, backend err %v", err, h.err)
				}
				if got := h.state.PeerCertificates[0].SerialNumber; got.Cmp(f.server.Cert.SerialNumber) != 0 {
					t.Errorf("backend saw client serial %x, want ours %x", got, f.server.Cert.SerialNumber)
				}
				return
			}
			if err == nil {
				t.Fatal("client accepted the backend")
			}
			if got := HandshakeFailureReason(err); got != tt.wantReason {
				t.Errorf("reason = %q (err %v), want %q", got, err, tt.wantReason)
			}
		})
	}
}

func TestClientConfigNeverTrustsSystemRoots(t *testing.T) {
	// An empty bundle must mean "trust nobody", not "fall back to the
	// system roots" as a nil x509.CertPool would.
	f := newFixture(t)
	f.cfg.ClientCAFile = ""
	m := f.open(t)
	srv := backend(t, f.ca.Issue(t, testpki.LeafOptions{DNS: []string{"localhost"}}), f.ca)
	_, err := dial(t, srv.addr, m.ClientConfig("localhost"))
	srv.next(t)
	if got := HandshakeFailureReason(err); got != ReasonUnknownCA {
		t.Errorf("reason = %q (err %v), want unknown_ca", got, err)
	}
}

func TestClientConfigUsesSeparateBackendCAAndReloadsIt(t *testing.T) {
	f := newFixture(t)
	backendCA := testpki.NewCA(t, "Backend Root")
	f.cfg.BackendCAFile = filepath.Join(f.dir, "backend-ca.pem")
	writeFile(t, f.cfg.BackendCAFile, string(f.ca.CertPEM)) // initially the peers' CA only
	m := f.open(t)
	cfg := m.ClientConfig("um1.example.com") // built once: reload must apply to it
	srv := backend(t, backendCA.Issue(t, testpki.LeafOptions{DNS: []string{"um1.example.com"}}), f.ca)

	if _, err := dial(t, srv.addr, cfg); HandshakeFailureReason(err) != ReasonUnknownCA {
		t.Fatalf("before reload: %v, want unknown_ca", err)
	}
	srv.next(t)
	if err := os.WriteFile(f.cfg.BackendCAFile, backendCA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, srv.addr, cfg); err != nil {
		t.Fatalf("after reload: %v", err)
	}
	srv.next(t)
	if _, ok := m.NotAfter()["backend_ca"]; !ok {
		t.Error("NotAfter lacks backend_ca although backend_ca_file is set")
	}
}

func TestClientSessionsResumeAndAreForgottenOnReload(t *testing.T) {
	f := newFixture(t)
	m := f.open(t)
	srv := backend(t, f.ca.Issue(t, testpki.LeafOptions{DNS: []string{"um1.example.com"}}), f.ca)
	for i, want := range []bool{false, true} {
		cs, err := dial(t, srv.addr, m.ClientConfig("um1.example.com"))
		srv.next(t)
		if err != nil || cs.DidResume != want {
			t.Fatalf("dial %d: err %v resumed %v, want resumed %v", i, err, cs.DidResume, want)
		}
	}
	f.ca.Issue(t, serverOptions()).WriteFiles(t, f.dir, "server")
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	cs, err := dial(t, srv.addr, m.ClientConfig("um1.example.com"))
	h := srv.next(t)
	if err != nil || cs.DidResume {
		t.Fatalf("after reload: err %v resumed %v, want a full handshake", err, cs.DidResume)
	}
	if got := h.state.PeerCertificates[0].SerialNumber; got.Cmp(m.Leaf().SerialNumber) != 0 {
		t.Errorf("backend saw %x, want the reloaded certificate %x", got, m.Leaf().SerialNumber)
	}
}

func TestClientConfigWithoutServerNameRefuses(t *testing.T) {
	f := newFixture(t)
	m := f.open(t)
	srv := backend(t, f.ca.Issue(t, testpki.LeafOptions{DNS: []string{"um1.example.com"}}), f.ca)
	_, err := dial(t, srv.addr, m.ClientConfig(""))
	srv.next(t)
	if err == nil || !strings.Contains(err.Error(), "no server name") {
		t.Fatalf("err = %v, want a refusal for the missing server name", err)
	}
}
