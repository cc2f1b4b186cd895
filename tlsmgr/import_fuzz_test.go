package tlsmgr

import (
	"crypto/x509"
	"testing"

	"github.com/umrouter/umrouter/internal/testpki"
	"software.sslmate.com/src/go-pkcs12"
)

// FuzzDecodeImport feeds the import decoder (PEM, DER, PKCS#12) files it
// did not expect: it must refuse them with an error, never panic, and
// whatever it accepts must be usable (a key that signs, certificates that
// parsed).
func FuzzDecodeImport(f *testing.F) {
	ca := testpki.NewCA(f, "Fuzz CA")
	leaf := ca.Issue(f, testpki.LeafOptions{CN: "um.example.com"})
	pfx, err := pkcs12.Modern.Encode(leaf.Key, leaf.Cert, []*x509.Certificate{ca.Cert}, "pw")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append(append([]byte{}, leaf.CertPEM...), leaf.KeyPEM...), "")
	f.Add(leaf.CertPEM, "")
	f.Add(leaf.Cert.Raw, "")
	f.Add(pfx, "pw")
	f.Add(pfx, "wrong")
	f.Add(pfx[:len(pfx)/2], "pw")
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), "")
	f.Add([]byte{0x30, 0x82, 0xff, 0xff}, "")
	f.Fuzz(func(t *testing.T, data []byte, password string) {
		certs, key, err := decodeImport(data, password)
		if err != nil {
			return
		}
		for _, c := range certs {
			if c == nil || len(c.Raw) == 0 {
				t.Fatal("accepted a nil or empty certificate")
			}
		}
		if key != nil && key.Public() == nil {
			t.Fatal("accepted a key without a public half")
		}
	})
}
