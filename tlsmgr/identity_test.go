package tlsmgr

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/testpki"
)

func TestPeerIdentitiesFollowRFC5922(t *testing.T) {
	ca := testpki.NewCA(t, "Peers Root")
	tests := []struct {
		name string
		o    testpki.LeafOptions
		want []string
	}{
		{"sip URI host", testpki.LeafOptions{URIs: []string{"sip:gw1.example.com"}}, []string{"gw1.example.com"}},
		{"sips URI host", testpki.LeafOptions{URIs: []string{"sips:gw1.example.com"}}, []string{"gw1.example.com"}},
		{"URI port and parameters dropped", testpki.LeafOptions{URIs: []string{"sip:gw1.example.com:5061;transport=tls"}}, []string{"gw1.example.com"}},
		{"URI with user part names a user, not a domain", testpki.LeafOptions{URIs: []string{"sip:alice@example.com"}, CN: "cn.example.com"}, nil},
		{"non-SIP URI ignored", testpki.LeafOptions{URIs: []string{"https://gw1.example.com/"}, CN: "cn.example.com"}, nil},
		{"DNS names", testpki.LeafOptions{DNS: []string{"gw1.example.com", "gw1b.example.com"}}, []string{"gw1.example.com", "gw1b.example.com"}},
		{"URIs before DNS names", testpki.LeafOptions{DNS: []string{"dns.example.com"}, URIs: []string{"sip:uri.example.com"}}, []string{"uri.example.com", "dns.example.com"}},
		{"CN only without SAN", testpki.LeafOptions{CN: "gw1.example.com"}, []string{"gw1.example.com"}},
		{"CN ignored when SAN present", testpki.LeafOptions{CN: "cn.example.com", DNS: []string{"dns.example.com"}}, []string{"dns.example.com"}},
		{"lowercased and deduplicated", testpki.LeafOptions{URIs: []string{"sip:GW1.Example.COM"}, DNS: []string{"gw1.example.com", "GW1.EXAMPLE.COM."}}, []string{"gw1.example.com"}},
		{"IPv6 URI host", testpki.LeafOptions{URIs: []string{"sip:[2001:db8::1]:5061"}}, []string{"2001:db8::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PeerIdentities(ca.Issue(t, tt.o).Cert); !slices.Equal(got, tt.want) {
				t.Errorf("PeerIdentities = %q, want %q", got, tt.want)
			}
		})
	}
	if got := PeerIdentities(nil); got != nil {
		t.Errorf("PeerIdentities(nil) = %q", got)
	}
}

func TestIsSelfSigned(t *testing.T) {
	ca := testpki.NewCA(t, "Peers Root")
	if !IsSelfSigned(testpki.SelfSigned(t, testpki.LeafOptions{}).Cert) {
		t.Error("self-signed leaf not detected")
	}
	if IsSelfSigned(ca.Issue(t, testpki.LeafOptions{CN: "Peers Root"}).Cert) {
		t.Error("CA-issued leaf whose subject equals its issuer reported self-signed")
	}
	if IsSelfSigned(nil) {
		t.Error("nil reported self-signed")
	}
}

// FuzzPeerIdentities builds a certificate whose SAN URI, SAN DNS name and
// CN come from the fuzzer, round-trips it through DER as a peer's would,
// and checks the identity invariants. A second input, raw DER, exercises
// whatever x509.ParseCertificate accepts.
func FuzzPeerIdentities(f *testing.F) {
	f.Add("sip:gw1.example.com", "gw1.example.com", "gw1", []byte(nil))
	f.Add("sips:GW.example.com:5061;transport=tls?x=y", "", "", []byte(nil))
	f.Add("sip:user@example.com", "A.example.com.", "CN.example.com", []byte(nil))
	f.Add("sip:[::1]:5061", "", "", []byte(nil))
	f.Add("sip://host.example.com/path", "", "", []byte(nil))
	f.Add("", "", "Only.CN", []byte(nil))
	f.Add("", "", "", testpki.NewCA(f, "Seed Root").Issue(f, testpki.LeafOptions{
		URIs: []string{"sip:seed.example.com"}, DNS: []string{"seed.example.com"}}).Cert.Raw)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, uri, dns, cn string, der []byte) {
		if c, err := x509.ParseCertificate(der); err == nil {
			checkIdentities(t, c)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Unix(0, 0),
			NotAfter:     time.Unix(1<<32, 0),
		}
		if uri != "" {
			u, err := url.Parse(uri)
			if err != nil {
				return
			}
			tmpl.URIs = []*url.URL{u}
		}
		if dns != "" {
			tmpl.DNSNames = []string{dns}
		}
		raw, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			return
		}
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return
		}
		checkIdentities(t, c)
	})
}

func checkIdentities(t *testing.T, c *x509.Certificate) {
	ids := PeerIdentities(c)
	for i, id := range ids {
		if id == "" || id != strings.ToLower(id) || slices.Contains(ids[:i], id) {
			t.Fatalf("identities %q: empty, not lowercase or duplicated", ids)
		}
	}
	if len(c.URIs) > 0 || len(c.DNSNames) > 0 {
		noCN := *c
		noCN.Subject.CommonName = ""
		if got := PeerIdentities(&noCN); !slices.Equal(got, ids) {
			t.Fatalf("identities %q depend on the CN %q although the certificate has SANs (without it: %q)",
				ids, c.Subject.CommonName, got)
		}
	}
}
