package tlsmgr

import (
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/testpki"
)

// servedSerial dials srv with a valid client and returns the serial of the
// certificate the server presented.
func servedSerial(t *testing.T, f *fixture, srv *tlsServer, client *testpki.Leaf) *big.Int {
	t.Helper()
	cs, err := dial(t, srv.addr, clientOf(client, f.ca))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if h := srv.next(t); h.err != nil {
		t.Fatalf("server: %v", h.err)
	}
	return cs.PeerCertificates[0].SerialNumber
}

func TestReloadSwapsServerCertificateForNewHandshakes(t *testing.T) {
	f := newFixture(t)
	m := f.open(t)
	srv := serve(t, m.ServerConfig()) // built once: reload must not need a new listener
	client := f.ca.Issue(t, testpki.LeafOptions{})
	if got := servedSerial(t, f, srv, client); got.Cmp(f.server.Cert.SerialNumber) != 0 {
		t.Fatalf("before reload served %x, want %x", got, f.server.Cert.SerialNumber)
	}

	next := f.ca.Issue(t, serverOptions())
	next.WriteFiles(t, f.dir, "server")
	if err := m.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := servedSerial(t, f, srv, client); got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatalf("after reload served %x, want new serial %x", got, next.Cert.SerialNumber)
	}
	if m.Leaf().SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Error("Leaf() does not return the reloaded certificate")
	}
}

func TestReloadRefusesBadMaterialAndKeepsServing(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		break_  func(t *testing.T, f *fixture)
		wantErr string // a fragment the operator needs: the file and the fault
	}{
		{"corrupt certificate file", func(t *testing.T, f *fixture) {
			writeFile(t, f.cfg.CertFile, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
		}, "server.crt"},
		{"certificate file that is not PEM", func(t *testing.T, f *fixture) {
			writeFile(t, f.cfg.CertFile, "garbage")
		}, "not a PEM file"},
		{"key of another certificate", func(t *testing.T, f *fixture) {
			a, b := f.ca.Issue(t, serverOptions()), f.ca.Issue(t, serverOptions())
			writeFile(t, f.cfg.CertFile, string(a.CertPEM))
			writeFile(t, f.cfg.KeyFile, string(b.KeyPEM))
		}, "does not match"},
		{"expired certificate", func(t *testing.T, f *fixture) {
			o := serverOptions()
			o.NotBefore, o.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
			f.ca.Issue(t, o).WriteFiles(t, f.dir, "server")
		}, "expired"},
		{"certificate not yet valid", func(t *testing.T, f *fixture) {
			o := serverOptions()
			o.NotBefore, o.NotAfter = now.Add(time.Hour), now.Add(48*time.Hour)
			f.ca.Issue(t, o).WriteFiles(t, f.dir, "server")
		}, "not valid before"},
		{"missing key file", func(t *testing.T, f *fixture) {
			if err := os.Remove(f.cfg.KeyFile); err != nil {
				t.Fatal(err)
			}
		}, "server.key"},
		{"corrupt client CA bundle", func(t *testing.T, f *fixture) {
			writeFile(t, f.cfg.ClientCAFile, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
		}, "ca.pem"},
		{"CRL signed by an unknown CA", func(t *testing.T, f *fixture) {
			f.cfg.CRLFile = filepath.Join(f.dir, "peers.crl") // the Manager keeps its cfg; write where it looks
			writeFile(t, f.cfg.CRLFile, string(testpki.NewCA(t, "Stranger").CRL(t)))
		}, "not signed by any CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.writeCRL(t) // an empty, valid CRL, so the CRL case has a file to spoil
			m := f.open(t)
			srv := serve(t, m.ServerConfig())
			client := f.ca.Issue(t, testpki.LeafOptions{})
			old := f.server.Cert.SerialNumber

			tt.break_(t, f)
			err := m.Reload()
			if err == nil {
				t.Fatal("Reload accepted bad material")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Reload error %q does not mention %q", err, tt.wantErr)
			}
			if got := servedSerial(t, f, srv, client); got.Cmp(old) != 0 {
				t.Errorf("after refused reload served %x, want old %x", got, old)
			}
		})
	}
}

func TestOpenRefusesBadMaterialWithPath(t *testing.T) {
	f := newFixture(t)
	f.cfg.CertFile = filepath.Join(f.dir, "missing.crt")
	_, err := Open(f.cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "load "+f.cfg.CertFile) {
		t.Fatalf("Open error = %v, want it to name %s", err, f.cfg.CertFile)
	}
	f = newFixture(t)
	f.cfg.MinVersion = "1.1"
	if _, err := Open(f.cfg, nil); err == nil || !strings.Contains(err.Error(), "min_version") {
		t.Fatalf("Open error = %v, want a min_version complaint", err)
	}
}

func TestKeyFormatsLoad(t *testing.T) {
	// PKCS#8 is what testpki writes; EC and PKCS#1 are what openssl and
	// older tooling write.
	for _, kt := range []string{testpki.KeyECDSAP256, testpki.KeyRSA2048} {
		t.Run(kt, func(t *testing.T) {
			f := newFixture(t)
			o := serverOptions()
			o.KeyType = kt
			leaf := f.ca.Issue(t, o)
			leaf.WriteFiles(t, f.dir, "server")
			writeFile(t, f.cfg.KeyFile, string(legacyKeyPEM(t, leaf)))
			m := f.open(t)
			if m.Leaf().SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
				t.Error("wrong certificate loaded")
			}
		})
	}
}

func TestNotAfterReportsServerAndEarliestClientCA(t *testing.T) {
	f := newFixture(t)
	m := f.open(t)
	got := m.NotAfter()
	if !got["server"].Equal(f.server.Cert.NotAfter) {
		t.Errorf("server = %v, want %v", got["server"], f.server.Cert.NotAfter)
	}
	if !got["client_ca"].Equal(f.ca.Cert.NotAfter) {
		t.Errorf("client_ca = %v, want %v", got["client_ca"], f.ca.Cert.NotAfter)
	}
	if m.SelfSigned() {
		t.Error("CA-issued certificate reported self-signed")
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
