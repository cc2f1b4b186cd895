package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"testing"
	"time"
)

func TestIssuedLeafVerifiesAgainstCAFile(t *testing.T) {
	ca := NewCA(t, "Test Root")
	leaf := ca.Issue(t, LeafOptions{
		CN:   "gw1.example.com",
		DNS:  []string{"gw1.example.com"},
		URIs: []string{"sip:gw1.example.com"},
		IPs:  []net.IP{net.ParseIP("127.0.0.1")},
	})
	dir := t.TempDir()
	caPath := ca.WriteCAFile(t, dir)
	bundle, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("CA file holds no certificate")
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{
		Roots:     pool,
		DNSName:   "gw1.example.com",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Fatalf("issued leaf does not verify: %v", err)
	}
	if got := leaf.Cert.URIs[0].String(); got != "sip:gw1.example.com" {
		t.Errorf("SAN URI = %q", got)
	}
}

func TestWriteFilesLoadAsTLSKeyPairWithKeyMode0600(t *testing.T) {
	ca := NewCA(t, "Test Root")
	for _, kt := range []string{KeyECDSAP256, KeyRSA2048, KeyRSA1024} {
		t.Run(kt, func(t *testing.T) {
			leaf := ca.Issue(t, LeafOptions{KeyType: kt})
			certPath, keyPath := leaf.WriteFiles(t, t.TempDir(), "server")
			pair, err := tls.LoadX509KeyPair(certPath, keyPath)
			if err != nil {
				t.Fatal(err)
			}
			if len(pair.Certificate) != 2 {
				t.Errorf("chain length = %d, want leaf + CA", len(pair.Certificate))
			}
			st, err := os.Stat(keyPath)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("key mode = %v, want 0600", st.Mode().Perm())
			}
		})
	}
}

func TestSelfSignedLeafIsItsOwnIssuer(t *testing.T) {
	leaf := SelfSigned(t, LeafOptions{CN: "self"})
	// CheckSignatureFrom would refuse a non-CA parent; check the raw signature.
	c := leaf.Cert
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
		t.Fatalf("self-signed leaf does not verify with its own key: %v", err)
	}
	if len(leaf.TLS.Certificate) != 1 {
		t.Errorf("self-signed chain length = %d, want 1", len(leaf.TLS.Certificate))
	}
}

func TestValidityWindowIsHonoured(t *testing.T) {
	ca := NewCA(t, "Test Root")
	nb := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	na := time.Now().Add(-24 * time.Hour).Truncate(time.Second)
	leaf := ca.Issue(t, LeafOptions{NotBefore: nb, NotAfter: na})
	if !leaf.Cert.NotBefore.Equal(nb) || !leaf.Cert.NotAfter.Equal(na) {
		t.Errorf("validity = %v..%v, want %v..%v", leaf.Cert.NotBefore, leaf.Cert.NotAfter, nb, na)
	}
}

func TestSerialsAreDistinct(t *testing.T) {
	ca := NewCA(t, "Test Root")
	a, b := ca.Issue(t, LeafOptions{}), ca.Issue(t, LeafOptions{})
	if a.Cert.SerialNumber.Cmp(b.Cert.SerialNumber) == 0 {
		t.Fatal("two leaves share a serial number")
	}
}

func TestCRLIsSignedByCAAndListsRevokedSerials(t *testing.T) {
	ca := NewCA(t, "Test Root")
	revoked := ca.Issue(t, LeafOptions{})
	ca.Issue(t, LeafOptions{}) // a second, unrevoked leaf must not appear
	block, _ := pem.Decode(ca.CRL(t, revoked))
	if block == nil || block.Type != "X509 CRL" {
		t.Fatal("CRL is not a PEM X509 CRL block")
	}
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	if len(crl.RevokedCertificateEntries) != 1 ||
		crl.RevokedCertificateEntries[0].SerialNumber.Cmp(revoked.Cert.SerialNumber) != 0 {
		t.Fatalf("CRL entries = %+v, want only %v", crl.RevokedCertificateEntries, revoked.Cert.SerialNumber)
	}
}
