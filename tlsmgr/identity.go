package tlsmgr

import (
	"bytes"
	"crypto/x509"
	"net"
	"slices"
	"strings"
)

// PeerIdentities returns the SIP identities of a certificate in RFC 5922
// §7.1 order: the host parts of SAN URIs with scheme sip: (or sips:), then
// the SAN DNS names; the subject CN only when the certificate has no SAN
// URI or DNS name at all. Identities are lowercased, stripped of a trailing
// dot and deduplicated, so they compare directly with configured FQDNs.
//
// Following RFC 5922, a SIP URI with a user part (sip:alice@example.com)
// names a user, not a domain, and is ignored, as are URIs of other schemes.
// A nil certificate has no identity.
func PeerIdentities(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	var ids []string
	add := func(s string) {
		s = strings.TrimSuffix(strings.ToLower(s), ".")
		if s != "" && !slices.Contains(ids, s) {
			ids = append(ids, s)
		}
	}
	for _, u := range cert.URIs {
		if u == nil {
			continue
		}
		switch strings.ToLower(u.Scheme) {
		case "sip", "sips":
			add(sipURIHost(u.Opaque, u.Host))
		}
	}
	for _, d := range cert.DNSNames {
		add(d)
	}
	if len(cert.URIs) == 0 && len(cert.DNSNames) == 0 {
		add(cert.Subject.CommonName)
	}
	return ids
}

// sipURIHost returns the host of a SIP URI whose parsed form is opaque
// ("sip:host:port;params?headers") or, for the unusual "sip://host" spelling,
// hierarchical. It returns "" when the URI has a user part.
func sipURIHost(opaque, host string) string {
	s := opaque
	if s == "" {
		s = host
	}
	if i := strings.IndexAny(s, ";?"); i >= 0 {
		s = s[:i]
	}
	if strings.Contains(s, "@") {
		return ""
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
}

// IsSelfSigned reports whether cert is signed by its own key: its issuer is
// its subject and its signature verifies with its own public key. Such a
// certificate proves nothing beyond possession of the key, which is why
// peers like Lync refuse it. A nil certificate is not self-signed.
func IsSelfSigned(cert *x509.Certificate) bool {
	if cert == nil || !bytes.Equal(cert.RawIssuer, cert.RawSubject) {
		return false
	}
	// CheckSignatureFrom would demand that the "parent" be a CA; a
	// self-signed leaf is not, so check the raw signature instead.
	return cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature) == nil
}
