// Package testpki builds real X.509 material for tests: a root CA, leaf
// certificates issued by it or self-signed, CRLs, and the PEM files that
// configuration under test points at.
//
// Every constructor takes a testing.TB and fails the test on error, so a
// test reads as a specification ("a gateway certificate naming gw1 that
// expired yesterday") rather than as crypto plumbing. Nothing here is meant
// for production use: keys are generated fresh per call and never protected.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Key types accepted in LeafOptions.KeyType.
const (
	KeyECDSAP256 = "ecdsa-p256"
	KeyRSA2048   = "rsa-2048"
	// KeyRSA1024 exists to test policies that refuse weak keys; Go refuses
	// to generate RSA keys under 1024 bits, so it is the weakest on offer.
	KeyRSA1024 = "rsa-1024"
)

// CA is a root certificate authority that issues leaves and CRLs.
type CA struct {
	// Cert is the parsed root certificate.
	Cert *x509.Certificate
	// Key signs issued certificates and CRLs.
	Key crypto.Signer
	// CertPEM is Cert encoded as a single PEM block, ready to append to a
	// trust bundle.
	CertPEM []byte
	// KeyPEM is Key as a PKCS#8 PEM block.
	KeyPEM []byte
}

// Leaf is an end-entity certificate with its private key.
type Leaf struct {
	// Cert is the parsed leaf certificate.
	Cert *x509.Certificate
	// Key is the leaf's private key.
	Key crypto.Signer
	// CertPEM is the leaf followed by the issuing CA (when not
	// self-signed), the layout servers load as "leaf then chain".
	CertPEM []byte
	// KeyPEM is Key as a PKCS#8 PEM block.
	KeyPEM []byte
	// TLS is the certificate ready for tls.Config.Certificates or a
	// GetClientCertificate callback; Leaf is set.
	TLS tls.Certificate
}

// LeafOptions describes a leaf certificate. The zero value is a valid
// ECDSA P-256 certificate with CN "leaf", valid from one hour ago for 24
// hours, for client and server authentication.
type LeafOptions struct {
	// CN is the subject common name; "leaf" when empty.
	CN string
	// DNS, URIs and IPs are the subject alternative names. URIs must parse
	// with url.Parse (e.g. "sip:gw1.example.com").
	DNS  []string
	URIs []string
	IPs  []net.IP
	// NotBefore and NotAfter default to now-1h and now+24h, so expired or
	// not-yet-valid certificates are one field away.
	NotBefore, NotAfter time.Time
	// KeyType is KeyECDSAP256 (default), KeyRSA2048 or KeyRSA1024.
	KeyType string
	// ExtKeyUsage defaults to client and server authentication.
	ExtKeyUsage []x509.ExtKeyUsage
	// SelfSigned makes the leaf sign itself instead of being issued by a
	// CA; SelfSigned() sets it implicitly.
	SelfSigned bool
}

// NewCA creates an ECDSA P-256 root CA named cn, valid from one hour ago
// for 24 hours.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	key := newKey(t, KeyECDSAP256)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(t),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"umrouter test PKI"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatalf("testpki: create CA %q: %v", cn, err)
	}
	cert := mustParse(t, der)
	return &CA{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  keyPEM(t, key),
	}
}

// Issue creates a leaf certificate signed by ca. o.SelfSigned is honoured,
// so a table of options can mix issued and self-signed leaves.
func (ca *CA) Issue(t testing.TB, o LeafOptions) *Leaf {
	t.Helper()
	if o.SelfSigned {
		return SelfSigned(t, o)
	}
	return newLeaf(t, o, ca)
}

// SelfSigned creates a leaf certificate that signs itself.
func SelfSigned(t testing.TB, o LeafOptions) *Leaf {
	t.Helper()
	o.SelfSigned = true
	return newLeaf(t, o, nil)
}

func newLeaf(t testing.TB, o LeafOptions, ca *CA) *Leaf {
	t.Helper()
	if o.CN == "" {
		o.CN = "leaf"
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(24 * time.Hour)
	}
	if o.ExtKeyUsage == nil {
		o.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	}
	uris := make([]*url.URL, 0, len(o.URIs))
	for _, s := range o.URIs {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("testpki: SAN URI %q: %v", s, err)
		}
		uris = append(uris, u)
	}
	key := newKey(t, o.KeyType)
	keyUsage := x509.KeyUsageDigitalSignature
	if _, isRSA := key.(*rsa.PrivateKey); isRSA {
		// RSA key exchange (TLS 1.2 without ECDHE) needs it; harmless otherwise.
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(t),
		Subject:               pkix.Name{CommonName: o.CN},
		NotBefore:             o.NotBefore,
		NotAfter:              o.NotAfter,
		KeyUsage:              keyUsage,
		ExtKeyUsage:           o.ExtKeyUsage,
		BasicConstraintsValid: true,
		DNSNames:              o.DNS,
		URIs:                  uris,
		IPAddresses:           o.IPs,
	}
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.Cert, ca.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatalf("testpki: create leaf %q: %v", o.CN, err)
	}
	cert := mustParse(t, der)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain := [][]byte{der}
	if ca != nil {
		certPEM = append(certPEM, ca.CertPEM...)
		chain = append(chain, ca.Cert.Raw)
	}
	return &Leaf{
		Cert:    cert,
		Key:     key,
		CertPEM: certPEM,
		KeyPEM:  keyPEM(t, key),
		TLS:     tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: cert},
	}
}

// WriteFiles writes the leaf's certificate chain and key as dir/base.crt and
// dir/base.key (mode 0600) and returns both paths.
func (l *Leaf) WriteFiles(t testing.TB, dir, base string) (certPath, keyPath string) {
	t.Helper()
	certPath = filepath.Join(dir, base+".crt")
	keyPath = filepath.Join(dir, base+".key")
	writeFile(t, certPath, l.CertPEM, 0o644)
	writeFile(t, keyPath, l.KeyPEM, 0o600)
	return certPath, keyPath
}

// WriteCAFile writes the CA certificate as a PEM bundle dir/<CN>-ca.pem
// (CN with path separators replaced) and returns its path.
func (ca *CA) WriteCAFile(t testing.TB, dir string) string {
	t.Helper()
	name := filepath.Base(filepath.Clean("/" + ca.Cert.Subject.CommonName))
	if name == "/" || name == "." {
		name = "ca"
	}
	p := filepath.Join(dir, name+"-ca.pem")
	writeFile(t, p, ca.CertPEM, 0o644)
	return p
}

// CRL returns a PEM-encoded CRL signed by ca that revokes the given leaves.
// It is valid from one hour ago for 24 hours. Each call yields a new CRL
// number, so successive CRLs are ordered as a real CA would issue them.
func (ca *CA) CRL(t testing.TB, revoked ...*Leaf) []byte {
	t.Helper()
	now := time.Now()
	entries := make([]x509.RevocationListEntry, 0, len(revoked))
	for _, l := range revoked {
		entries = append(entries, x509.RevocationListEntry{
			SerialNumber:   l.Cert.SerialNumber,
			RevocationTime: now.Add(-time.Minute),
		})
	}
	tmpl := &x509.RevocationList{
		Number:                    randomSerial(t),
		ThisUpdate:                now.Add(-time.Hour),
		NextUpdate:                now.Add(24 * time.Hour),
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatalf("testpki: create CRL: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

func newKey(t testing.TB, keyType string) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch keyType {
	case "", KeyECDSAP256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyRSA2048:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA1024:
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	default:
		t.Fatalf("testpki: unknown key type %q", keyType)
	}
	if err != nil {
		t.Fatalf("testpki: generate %s key: %v", keyType, err)
	}
	return k
}

// randomSerial returns a positive 127-bit serial, as RFC 5280 §4.1.2.2
// allows at most 20 octets and CAs are expected to use unpredictable ones.
func randomSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testpki: serial: %v", err)
	}
	return n.Add(n, big.NewInt(1))
}

func mustParse(t testing.TB, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse certificate: %v", err)
	}
	return c
}

func keyPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testpki: marshal key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatalf("testpki: %v", err)
	}
}
