package tlsmgr

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/testpki"
	"software.sslmate.com/src/go-pkcs12"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	st, err := OpenStore(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestNewSelfSignedStoresEachKeyTypeWithItsNames(t *testing.T) {
	for _, kt := range KeyTypes {
		t.Run(string(kt), func(t *testing.T) {
			st := newStore(t)
			info, err := st.NewSelfSigned(SelfSignedOptions{
				Names: Names{DNSNames: []string{"UM.Example.com.", "*.um.example.com"}, IPAddresses: []net.IP{net.IPv4(192, 0, 2, 7)}},
				Key:   kt, Days: 90,
			})
			if err != nil {
				t.Fatal(err)
			}
			if info.KeyType != string(kt) || !info.SelfSigned || info.Active || info.Problem != "" {
				t.Errorf("info = %+v, want key %s, self-signed, inactive, no problem", info, kt)
			}
			if info.Subject != "CN=um.example.com" || !slices.Equal(info.SANs(), []string{"DNS:um.example.com", "DNS:*.um.example.com", "IP:192.0.2.7"}) {
				t.Errorf("subject %q SANs %v", info.Subject, info.SANs())
			}
			if d := info.NotAfter.Sub(info.NotBefore); d < 90*24*time.Hour || d > 91*24*time.Hour {
				t.Errorf("validity %v, want 90 days", d)
			}
			if !validThumbprint(info.Thumbprint) {
				t.Errorf("thumbprint %q is not 64 lowercase hex digits", info.Thumbprint)
			}
			_, keyPath := st.paths(info.Thumbprint)
			assertMode(t, keyPath, 0o600)
		})
	}
}

func TestNewSelfSignedRefusesBadInput(t *testing.T) {
	tests := []struct {
		name string
		o    SelfSignedOptions
		want string
	}{
		{"no name", SelfSignedOptions{}, "at least one DNS name"},
		{"underscore", SelfSignedOptions{Names: Names{DNSNames: []string{"um_1.example.com"}}}, "not allowed"},
		{"wildcard inside", SelfSignedOptions{Names: Names{DNSNames: []string{"um.*.example.com"}}}, "not allowed"},
		{"wildcard on a TLD", SelfSignedOptions{Names: Names{DNSNames: []string{"*.com"}}}, "not allowed"},
		{"IP given as DNS", SelfSignedOptions{Names: Names{DNSNames: []string{"10.0.0.1"}}}, "IP address"},
		{"unknown key", SelfSignedOptions{Names: Names{DNSNames: []string{"a.example"}}, Key: "dsa-1024"}, "unknown key type"},
		{"too long", SelfSignedOptions{Names: Names{DNSNames: []string{"a.example"}}, Days: 3651}, "1 to 3650"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStore(t)
			if _, err := st.NewSelfSigned(tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to mention %q", err, tt.want)
			}
			if l, _ := st.List(); len(l) != 0 {
				t.Errorf("refused certificate stored: %v", l)
			}
		})
	}
}

// signCSR is a CA signing a request as it would: the request's names and
// public key, its own subject as issuer.
func signCSR(t *testing.T, ca *testpki.CA, csrPEM []byte, notAfter time.Time) []byte {
	t.Helper()
	block, _ := pem.Decode(csrPEM)
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("CSR signature: %v", err)
	}
	serial, _ := randomSerial()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, Subject: csr.Subject, DNSNames: csr.DNSNames, IPAddresses: csr.IPAddresses,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestRequestThenImportOfSignedCertificateCompletesIt(t *testing.T) {
	st := newStore(t)
	req, csrPEM, err := st.NewRequest(RequestOptions{
		Names:   Names{DNSNames: []string{"um.example.com", "um1.example.com"}},
		Subject: `CN=um.example.com, O=Contoso\, Ltd, OU=Voice, C=us`,
		Key:     KeyRSA2048,
	})
	if err != nil {
		t.Fatal(err)
	}
	if req.Subject != `CN=um.example.com,OU=Voice,O=Contoso\, Ltd,C=US` || req.KeyType != "rsa-2048" ||
		!slices.Equal(req.DNSNames, []string{"um.example.com", "um1.example.com"}) {
		t.Errorf("request = %+v", req)
	}
	keyPath, _ := st.requestPaths(req.ID)
	assertMode(t, keyPath, 0o600)
	pending, err := st.Requests()
	if err != nil || len(pending) != 1 || pending[0].ID != req.ID {
		t.Fatalf("Requests = %v, %v; want the one request", pending, err)
	}

	ca := testpki.NewCA(t, "Corp CA")
	signed := signCSR(t, ca, csrPEM, time.Now().Add(24*time.Hour))
	// The CA hands back the certificate with its own, as CAs do.
	imp, err := st.Import(append(signed, ca.CertPEM...), "")
	if err != nil {
		t.Fatal(err)
	}
	if imp.Request != req.ID || imp.Chain != 1 || imp.SelfSigned || imp.Problem != "" {
		t.Errorf("imported = %+v, want it to complete %s with a chain of 1", imp, req.ID)
	}
	if pending, _ := st.Requests(); len(pending) != 0 {
		t.Errorf("request still pending after import: %v", pending)
	}
	if _, err := st.Enable(imp.Thumbprint); err != nil {
		t.Errorf("completed certificate cannot be enabled: %v", err)
	}

	// The same certificate again has no request left to complete.
	if _, err := st.Import(signed, ""); err == nil || !strings.Contains(err.Error(), "pending request") {
		t.Errorf("second import without key = %v, want a no-pending-request error", err)
	}
}

// intermediate is a CA certificate issued by root, for chains of three.
func intermediate(t *testing.T, root *testpki.CA) *testpki.CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := randomSerial()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "Corp Issuing CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}, root.Cert, key.Public(), root.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testpki.CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func TestImportPEMOrdersTheChainAndValidates(t *testing.T) {
	root := testpki.NewCA(t, "Corp Root")
	inter := intermediate(t, root)
	leaf := inter.Issue(t, serverOptions())
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Cert.Raw})

	st := newStore(t)
	// Root first, key in the middle, leaf last: any order is accepted.
	imp, err := st.Import(slices.Concat(root.CertPEM, leaf.KeyPEM, inter.CertPEM, leafPEM), "")
	if err != nil {
		t.Fatal(err)
	}
	chain, err := st.Export(imp.Thumbprint)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 3 || !chain[0].Equal(leaf.Cert) || !chain[1].Equal(inter.Cert) || !chain[2].Equal(root.Cert) {
		t.Errorf("stored chain is not leaf, intermediate, root")
	}

	now := time.Now()
	expiredOpts := serverOptions()
	expiredOpts.NotBefore, expiredOpts.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
	expired := root.Issue(t, expiredOpts)
	stranger := testpki.NewCA(t, "Stranger")
	tests := []struct {
		name     string
		data     []byte
		password string
		want     string
	}{
		{"key of another certificate", slices.Concat(leafPEM, root.Issue(t, serverOptions()).KeyPEM), "", "matches none"},
		{"expired", slices.Concat(expired.CertPEM, expired.KeyPEM), "", "expired"},
		{"stranger in the chain", slices.Concat(leafPEM, inter.CertPEM, stranger.CertPEM, leaf.KeyPEM), "", "not part of the chain"},
		{"no key, no request", leafPEM, "", "no private key"},
		{"encrypted key", slices.Concat(leafPEM, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")), "", "encrypted"},
		{"garbage", []byte("\x00\x01 not a certificate"), "", "neither PEM, DER nor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newStore(t)
			if _, err := st.Import(tt.data, tt.password); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Import = %v, want an error mentioning %q", err, tt.want)
			}
			if l, _ := st.List(); len(l) != 0 {
				t.Errorf("refused import stored %d certificates", len(l))
			}
		})
	}
}

func TestImportPKCS12WithPassword(t *testing.T) {
	root := testpki.NewCA(t, "Corp Root")
	inter := intermediate(t, root)
	leaf := inter.Issue(t, serverOptions())
	pfx, err := pkcs12.Modern.Encode(leaf.Key, leaf.Cert, []*x509.Certificate{root.Cert, inter.Cert}, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(t)
	if _, err := st.Import(pfx, "wrong"); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("wrong password: err = %v, want ErrWrongPassword", err)
	}
	imp, err := st.Import(pfx, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if imp.Thumbprint != Thumbprint(leaf.Cert) || imp.Chain != 2 {
		t.Errorf("imported %+v, want the leaf with a chain of 2", imp)
	}
}

func TestImportDERCertificateCompletesRequest(t *testing.T) {
	st := newStore(t)
	_, csrPEM, err := st.NewRequest(RequestOptions{Names: Names{DNSNames: []string{"um.example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(signCSR(t, testpki.NewCA(t, "Corp CA"), csrPEM, time.Now().Add(time.Hour)))
	if imp, err := st.Import(block.Bytes, ""); err != nil || imp.Request == "" {
		t.Fatalf("Import(DER) = %+v, %v; want a completed request", imp, err)
	}
}

func TestEnableValidatesBeforeSwitching(t *testing.T) {
	st := newStore(t)
	ok, err := st.NewSelfSigned(SelfSignedOptions{Names: Names{DNSNames: []string{"a.example"}}})
	if err != nil {
		t.Fatal(err)
	}
	// Windows prints thumbprints in upper case with spaces; accept that.
	pasted := strings.ToUpper(ok.Thumbprint[:32]) + " " + strings.ToUpper(ok.Thumbprint[32:])
	if info, err := st.Enable(pasted); err != nil || !info.Active {
		t.Fatalf("Enable(%q) = %+v, %v", pasted, info, err)
	}

	// An expired certificate slipped into the store (e.g. copied by hand).
	now := time.Now()
	o := serverOptions()
	o.NotBefore, o.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
	expired := testpki.NewCA(t, "Corp CA").Issue(t, o)
	thumb, err := st.add([]*x509.Certificate{expired.Cert}, expired.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Enable(thumb); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("Enable(expired) = %v, want an expiry error", err)
	}
	if _, err := st.Enable(strings.Repeat("0", 64)); err == nil || !strings.Contains(err.Error(), "no certificate") {
		t.Errorf("Enable(unknown) = %v", err)
	}
	if _, err := st.Enable("abc"); err == nil || !strings.Contains(err.Error(), "64 hex digits") {
		t.Errorf("Enable(abc) = %v", err)
	}
	if active, _ := st.Active(); active != ok.Thumbprint {
		t.Errorf("active = %s after refused enables, want %s", active, ok.Thumbprint)
	}

	list, err := st.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %v, %v", list, err)
	}
	if !list[0].Active || list[0].Thumbprint != ok.Thumbprint || list[1].Problem == "" {
		t.Errorf("List = %+v, want the active one first and the expired one with its problem", list)
	}
}

func TestRemoveRefusesTheActiveCertificate(t *testing.T) {
	st := newStore(t)
	a, _ := st.NewSelfSigned(SelfSignedOptions{Names: Names{DNSNames: []string{"a.example"}}})
	b, _ := st.NewSelfSigned(SelfSignedOptions{Names: Names{DNSNames: []string{"b.example"}}})
	if _, err := st.Enable(a.Thumbprint); err != nil {
		t.Fatal(err)
	}
	if err := st.Remove(a.Thumbprint); err == nil || !strings.Contains(err.Error(), "active") {
		t.Errorf("Remove(active) = %v, want a refusal", err)
	}
	if err := st.Remove(b.Thumbprint); err != nil {
		t.Fatal(err)
	}
	certPath, keyPath := st.paths(b.Thumbprint)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after remove", p)
		}
	}
	req, _, err := st.NewRequest(RequestOptions{Names: Names{DNSNames: []string{"c.example"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Remove(req.ID); err != nil {
		t.Errorf("Remove(pending request) = %v", err)
	}
	if err := st.Remove(b.Thumbprint); err == nil {
		t.Error("removing twice succeeded")
	}
}

func TestParseSubject(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "", want: ""},
		{in: "CN=um.example.com", want: "CN=um.example.com"},
		{in: "cn=um.example.com, o=Contoso, ou=Voice, l=Redmond, st=WA, c=us", want: "CN=um.example.com,OU=Voice,O=Contoso,L=Redmond,ST=WA,C=US"},
		{in: "/C=US/O=Contoso/CN=um.example.com", want: "CN=um.example.com,O=Contoso,C=US"},
		{in: `CN=um,O=Contoso\, Ltd`, want: `CN=um,O=Contoso\, Ltd`},
		{in: "CN=a,CN=b", err: "twice"},
		{in: "C=USA", err: "two-letter"},
		{in: "EMAIL=x@example.com", err: "unknown attribute"},
		{in: "CN", err: "ATTRIBUTE=value"},
	}
	for _, tt := range tests {
		got, err := ParseSubject(tt.in)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseSubject(%q) err = %v, want %q", tt.in, err, tt.err)
			}
		case err != nil:
			t.Errorf("ParseSubject(%q): %v", tt.in, err)
		case got.String() != tt.want:
			t.Errorf("ParseSubject(%q) = %q, want %q", tt.in, got.String(), tt.want)
		}
	}
}
