package tlsmgr

import (
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// ExpiryWarning is how long before its expiry the active certificate is
// warned about: time enough to request, have signed and import a new one.
const ExpiryWarning = 30 * 24 * time.Hour

// Warnings returns what a person should fix about the active certificate,
// one sentence each, empty when nothing:
//
//   - it does not name Config.Advertise (checked like a peer would, with
//     x509's host name rules, wildcards and IP SANs included, or as an
//     RFC 5922 SIP identity);
//   - it expires within ExpiryWarning, or lacks the clientAuth extended key
//     usage, so that backends and gateways verifying us as a TLS client
//     refuse it (many public CAs no longer include it).
//
// Whether a self-signed certificate deserves a warning depends on the dial
// plans (Secured plans, Lync peers), which tlsmgr does not know: callers
// combine SelfSigned with their configuration. The Manager logs each
// warning at WARN when material is loaded or reloaded, and Watch repeats
// them daily, so an expiry approaching on a daemon that never reloads is
// still seen.
func (m *Manager) Warnings() []string {
	return certWarnings(m.cur.Load().cert.Leaf, m.cfg.Advertise, time.Now())
}

func (m *Manager) logWarnings(s *snapshot) {
	for _, w := range certWarnings(s.cert.Leaf, m.cfg.Advertise, time.Now()) {
		m.log.Warn(w, zap.String("thumbprint", s.thumbprint), zap.String("cert_file", s.source))
	}
}

func certWarnings(leaf *x509.Certificate, advertise string, now time.Time) []string {
	var out []string
	if host := advertiseHost(advertise); host != "" && !namesHost(leaf, host) {
		out = append(out, fmt.Sprintf("certificate %s does not name advertise host %q (it names %s): peers that verify our name will refuse it",
			describe(leaf), host, strings.Join(certNames(leaf), ", ")))
	}
	if left := leaf.NotAfter.Sub(now); left < ExpiryWarning {
		out = append(out, fmt.Sprintf("certificate %s expires in %s, at %s: import and enable its successor",
			describe(leaf), roughly(left), leaf.NotAfter.UTC().Format(time.RFC3339)))
	}
	if len(leaf.ExtKeyUsage) > 0 && !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) &&
		!slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		out = append(out, fmt.Sprintf("certificate %s has no clientAuth extended key usage: backends and gateways that verify umrouter's client certificate will refuse it",
			describe(leaf)))
	}
	return out
}

// roughly says how long d is for a person: days, or hours under two days.
func roughly(d time.Duration) string {
	if d < 48*time.Hour {
		return fmt.Sprintf("%d hours", int(max(d, 0).Hours()))
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

// advertiseHost strips a port and brackets from an advertise value.
func advertiseHost(a string) string {
	a = strings.TrimSpace(a)
	if h, _, err := net.SplitHostPort(a); err == nil {
		a = h
	}
	return strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(a, "["), "]"), ".")
}

func namesHost(leaf *x509.Certificate, host string) bool {
	if leaf.VerifyHostname(host) == nil {
		return true
	}
	return slices.Contains(PeerIdentities(leaf), strings.ToLower(host))
}

// certNames lists a certificate's names for messages: its SANs, else its CN.
func certNames(c *x509.Certificate) []string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, "CN "+c.Subject.CommonName)
	}
	if len(names) == 0 {
		names = append(names, "no name")
	}
	return names
}
