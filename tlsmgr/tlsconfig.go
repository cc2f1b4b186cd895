package tlsmgr

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"

	"strings"
	"time"
)

// ServerConfig returns a mutual TLS server configuration for the SIP
// listeners (TLS 5061).
//
// Every peer must present a certificate that chains to client_ca_file with
// the clientAuth (or any) extended key usage, is within its validity period
// and is not revoked by crl_file. That check runs in VerifyConnection, which
// crypto/tls calls on full and resumed handshakes alike, so a peer revoked
// after it obtained a session ticket is refused on resumption. The
// certificate we present, the CA names we advertise and the check itself all
// read the current snapshot, so Reload applies to the next handshake.
//
// A refusal's error wraps a *VerifyError; HandshakeFailureReason classifies
// it. The Manager does not log per handshake: the caller counts and logs
// refusals, with the peer address it alone knows.
//
// The returned config is the caller's; GetConfigForClient derives the
// per-handshake config from it, so fields the caller sets (NextProtos,
// KeyLogWriter, ...) are honoured as long as they are set before use.
func (m *Manager) ServerConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion: m.minVersion,
		// RequireAnyClientCert makes crypto/tls demand a certificate but
		// leave its verification to VerifyConnection, which (unlike
		// ClientCAs) reads the current snapshot.
		ClientAuth:       tls.RequireAnyClientCert,
		GetCertificate:   m.getCertificate,
		VerifyConnection: m.verifyClientConnection,
	}
	// Advertise the current client CAs in the CertificateRequest: Windows
	// peers (Lync, Exchange, many SBCs) pick the certificate they present
	// from that list. One clone per snapshot, made by the first handshake
	// that sees it, not one per handshake. Session ticket keys stay those
	// of cfg: crypto/tls takes them from the original config.
	type perSnapshot struct {
		s   *snapshot
		cfg *tls.Config
	}
	var cached atomic.Pointer[perSnapshot]
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		s := m.cur.Load()
		if p := cached.Load(); p != nil && p.s == s {
			return p.cfg, nil
		}
		c := cfg.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = s.clientCAs.pool
		cached.Store(&perSnapshot{s: s, cfg: c})
		return c, nil
	}
	return cfg
}

// ClientConfig returns the configuration for dialing a backend or gateway
// named serverName (an FQDN, or an IP address whose IP SAN is then checked).
//
// We present the active certificate through GetClientCertificate, and
// verify the server's chain against backend_ca_file (or client_ca_file),
// never the system roots, in VerifyConnection; both read the current
// snapshot, so Reload applies to the next dial. InsecureSkipVerify is set
// only because crypto/tls's built-in verification would pin the trust pool
// at config creation; VerifyConnection does the full chain, usage
// (serverAuth), validity, revocation and host name check instead.
//
// Sessions are resumed through a cache shared by all ClientConfigs of this
// Manager and emptied by every Reload, so a resumed session never carries a
// certificate or trust decision that a reload replaced.
func (m *Manager) ClientConfig(serverName string) *tls.Config {
	host := strings.TrimSuffix(strings.TrimPrefix(serverName, "["), "]")
	return &tls.Config{
		MinVersion:           m.minVersion,
		ServerName:           host,
		InsecureSkipVerify:   true, // see above: VerifyConnection verifies
		GetClientCertificate: m.getClientCertificate,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return m.verifyServer(cs.PeerCertificates, host)
		},
		ClientSessionCache: &m.sessions,
	}
}

func (m *Manager) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.cur.Load().cert, nil
}

func (m *Manager) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return m.cur.Load().cert, nil
}

func (m *Manager) verifyClientConnection(cs tls.ConnectionState) error {
	s := m.cur.Load()
	_, err := verifyPeer(cs.PeerCertificates, s.clientCAs, s.crl, x509.ExtKeyUsageClientAuth, time.Now())
	return err
}

func (m *Manager) verifyServer(certs []*x509.Certificate, host string) error {
	s := m.cur.Load()
	if _, err := verifyPeer(certs, s.backendCAs, s.crl, x509.ExtKeyUsageServerAuth, time.Now()); err != nil {
		return err
	}
	if host == "" {
		return &VerifyError{Reason: ReasonOther, Err: errors.New("no server name to verify the certificate against")}
	}
	if err := certs[0].VerifyHostname(host); err != nil {
		return &VerifyError{Reason: ReasonOther, Err: fmt.Errorf("certificate %s: %w", describe(certs[0]), err)}
	}
	return nil
}

// verifyPeer checks a peer's chain (leaf first, as presented) against
// the roots of bundle: validity of the leaf, a chain to a root with the
// given usage, and revocation. Every error is a *VerifyError. The leaf's
// validity is checked first and separately because x509 reports "expired"
// for both ends of the window and an operator needs to tell a stale
// certificate from a clock problem. Chains built before for the same
// presented certificates are taken from the bundle's cache (their
// validity and revocation checked again now).
func verifyPeer(certs []*x509.Certificate, bundle caBundle, crl *revocations,
	usage x509.ExtKeyUsage, now time.Time) ([][]*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, &VerifyError{Reason: ReasonNoCertificate, Err: errors.New("peer presented no certificate")}
	}
	leaf := certs[0]
	if now.Before(leaf.NotBefore) {
		return nil, &VerifyError{Reason: ReasonNotYetValid, Err: checkValidity(leaf, now)}
	}
	if now.After(leaf.NotAfter) {
		return nil, &VerifyError{Reason: ReasonExpired, Err: checkValidity(leaf, now)}
	}
	key := chainKey(certs, usage)
	if chains := bundle.verified.get(key, now); len(chains) > 0 {
		return checkRevocation(chains, crl)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         bundle.pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		reason := x509Reason(err)
		if reason == "" {
			reason = ReasonOther
		}
		return nil, &VerifyError{Reason: reason, Err: fmt.Errorf("certificate %s: %w", describe(leaf), err)}
	}
	bundle.verified.put(key, chains)
	return checkRevocation(chains, crl)
}

// checkRevocation refuses chains of which any certificate is revoked.
func checkRevocation(chains [][]*x509.Certificate, crl *revocations) ([][]*x509.Certificate, error) {
	for _, chain := range chains {
		if err := crl.check(chain); err != nil {
			return nil, &VerifyError{Reason: ReasonRevoked, Err: err}
		}
	}
	return chains, nil
}

// clientSessions is the ClientSessionCache of every ClientConfig: it
// forwards to the current snapshot's cache, so a Reload forgets sessions
// established with replaced material.
type clientSessions struct {
	m *Manager
}

// Get implements tls.ClientSessionCache.
func (c *clientSessions) Get(key string) (*tls.ClientSessionState, bool) {
	return c.m.cur.Load().sessions.Get(key)
}

// Put implements tls.ClientSessionCache.
func (c *clientSessions) Put(key string, cs *tls.ClientSessionState) {
	c.m.cur.Load().sessions.Put(key, cs)
}
