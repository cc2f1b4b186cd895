package tlsmgr

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/testpki"
)

// TestVerifiedChainsAreRememberedButTimeAndRevocationAreNot: a peer that
// presents the same certificates again is checked from the bundle's cache,
// and the cache never lets through what a full check would refuse now: an
// expired certificate, a revoked one, another key usage, another bundle.
func TestVerifiedChainsAreRememberedButTimeAndRevocationAreNot(t *testing.T) {
	ca := testpki.NewCA(t, "cache CA")
	gw := ca.Issue(t, testpki.LeafOptions{CN: "gw1", DNS: []string{"gw1.example.com"}})
	serverOnly := ca.Issue(t, testpki.LeafOptions{CN: "srv", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	bundle, err := parseCABundle("ca.pem", ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	certs := []*x509.Certificate{gw.Cert}
	for i := 0; i < 2; i++ { // the second from the cache
		if _, err := verifyPeer(certs, bundle, nil, x509.ExtKeyUsageClientAuth, now); err != nil {
			t.Fatalf("check %d: %v", i+1, err)
		}
	}
	if got := bundle.verified.get(chainKey(certs, x509.ExtKeyUsageClientAuth), now); len(got) == 0 {
		t.Fatal("the verified chain was not remembered")
	}

	reason := func(err error) string {
		var ve *VerifyError
		if !errors.As(err, &ve) {
			t.Fatalf("not a VerifyError: %v", err)
		}
		return ve.Reason
	}
	// Later than the leaf's (and the CA's) end of validity.
	_, err = verifyPeer(certs, bundle, nil, x509.ExtKeyUsageClientAuth, gw.Cert.NotAfter.Add(time.Minute))
	if err == nil || reason(err) != ReasonExpired {
		t.Fatalf("expired leaf after caching: %v", err)
	}
	// Valid leaf, expired CA: the cached chain is not used, the full check refuses.
	if ca.Cert.NotAfter.Before(gw.Cert.NotAfter) {
		if _, err := verifyPeer(certs, bundle, nil, x509.ExtKeyUsageClientAuth, ca.Cert.NotAfter.Add(time.Second)); err == nil {
			t.Fatal("a chain through an expired CA passed from the cache")
		}
	}
	// Revoked after it was cached.
	crl, err := parseCRL("ca.crl", ca.CRL(t, gw), []*x509.Certificate{ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifyPeer(certs, bundle, crl, x509.ExtKeyUsageClientAuth, now); err == nil || reason(err) != ReasonRevoked {
		t.Fatalf("revoked after caching: %v", err)
	}
	// A server-only certificate, verified for serverAuth, is still refused for clientAuth.
	if _, err := verifyPeer([]*x509.Certificate{serverOnly.Cert}, bundle, nil, x509.ExtKeyUsageServerAuth, now); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyPeer([]*x509.Certificate{serverOnly.Cert}, bundle, nil, x509.ExtKeyUsageClientAuth, now); err == nil {
		t.Fatal("a serverAuth-only certificate passed as a client from the cache")
	}
	// Another bundle (a reload) has its own, empty cache and its own roots.
	other, err := parseCABundle("other.pem", testpki.NewCA(t, "other CA").CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifyPeer(certs, other, nil, x509.ExtKeyUsageClientAuth, now); err == nil {
		t.Fatal("a chain of the old bundle passed with the new one")
	}
}
