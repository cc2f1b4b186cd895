package tlsmgr

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Manager owns umrouter's certificate material: our certificate and key,
// the CAs peers and backends must chain to, and the CRL. It hands out
// tls.Configs whose callbacks read the current material on every handshake,
// so a Reload applies to new handshakes without rebuilding listeners, while
// established connections keep what they negotiated.
//
// Readers never lock: the material lives in an immutable snapshot behind an
// atomic pointer. Reload builds and validates a complete new snapshot
// before swapping it in; a failed Reload leaves the old one in force.
//
// The zero Manager is not usable: Open establishes the invariant that a
// snapshot is always present.
type Manager struct {
	cfg        Config
	log        *zap.Logger
	minVersion uint16

	cur      atomic.Pointer[snapshot]
	reloadMu sync.Mutex // serialises Reload; readers never take it

	sessions clientSessions
}

// snapshot is one consistent, validated set of material. It is never
// modified after publication.
type snapshot struct {
	cert       *tls.Certificate // Leaf is set
	thumbprint string
	source     string // where cert came from, for logs
	selfSigned bool
	clientCAs  caBundle
	backendCAs caBundle
	crl        *revocations // nil without crl_file

	// sessions caches client sessions made with this snapshot's
	// certificate; a reload starts a new cache so that no resumed
	// session carries an identity or a trust decision we replaced.
	sessions tls.ClientSessionCache
}

// Open validates cfg, loads the material and returns a Manager serving it.
//
// With cert_file and key_file set, those files are used as they are. Without
// them, the certificate is the active one of the store in state_dir; on first
// start the store is created (mode 0700) with a self-signed ECDSA P-256
// certificate for this host, logged at INFO. An empty client_ca_file is
// allowed but refuses every TLS peer, and is logged at WARN. log may be nil.
func Open(cfg Config, log *zap.Logger) (*Manager, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.Validate().Err(); err != nil {
		return nil, fmt.Errorf("tls config: %w", err)
	}
	m := &Manager{cfg: cfg, log: log, minVersion: tls.VersionTLS12}
	if cfg.MinVersion == "1.3" {
		m.minVersion = tls.VersionTLS13
	}
	m.sessions.m = m
	if cfg.CertFile == "" {
		if err := (store{dir: cfg.StateDir}).ensureActive(log); err != nil {
			return nil, err
		}
	}
	snap, err := m.load(time.Now())
	if err != nil {
		return nil, err
	}
	m.cur.Store(snap)
	m.logLoaded("tls material loaded", snap)
	return m, nil
}

// Reload re-reads every file (certificate and key or the store's active
// certificate, CA bundles, CRL), validates the result and swaps it in for
// new handshakes. On failure the current material stays in force and the
// error says which file was refused and why. Reload is safe to call
// concurrently with handshakes and with itself.
func (m *Manager) Reload() error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	snap, err := m.load(time.Now())
	if err != nil {
		return fmt.Errorf("tls reload refused, keeping certificate %s: %w", m.cur.Load().thumbprint, err)
	}
	old := m.cur.Swap(snap)
	msg := "tls material reloaded"
	if old.thumbprint != snap.thumbprint {
		msg = "tls material reloaded: certificate changed"
	}
	m.logLoaded(msg, snap)
	return nil
}

func (m *Manager) logLoaded(msg string, s *snapshot) {
	leaf := s.cert.Leaf
	m.log.Info(msg,
		zap.String("cert_file", s.source),
		zap.String("thumbprint", s.thumbprint),
		zap.String("subject", leaf.Subject.String()),
		zap.Time("not_after", leaf.NotAfter),
		zap.Bool("self_signed", s.selfSigned),
		zap.Int("client_cas", len(s.clientCAs.certs)),
		zap.Int("backend_cas", len(s.backendCAs.certs)),
		zap.Bool("crl", s.crl != nil))
	if len(s.clientCAs.certs) == 0 {
		m.log.Warn("no client CA configured: every TLS peer will be refused; set tls.client_ca_file",
			zap.String("client_ca_file", m.cfg.ClientCAFile))
	}
	if s.crl != nil && !s.crl.next.IsZero() && time.Now().After(s.crl.next) {
		m.log.Warn("CRL is past its next update; revocations issued since are unknown",
			zap.String("crl_file", m.cfg.CRLFile), zap.Time("next_update", s.crl.next))
	}
}

// load builds a snapshot from the files named by the configuration.
func (m *Manager) load(now time.Time) (*snapshot, error) {
	certPath, keyPath := m.cfg.CertFile, m.cfg.KeyFile
	var storeThumb string
	if certPath == "" {
		st := store{dir: m.cfg.StateDir}
		var ok bool
		var err error
		certPath, keyPath, storeThumb, ok, err = st.activePaths()
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("state_dir %s: no active certificate", m.cfg.StateDir)
		}
	}
	cert, err := loadKeyPair(certPath, keyPath, now)
	if err != nil {
		return nil, err
	}
	s := &snapshot{
		cert:       cert,
		thumbprint: Thumbprint(cert.Leaf),
		source:     certPath,
		selfSigned: IsSelfSigned(cert.Leaf),
		sessions:   tls.NewLRUClientSessionCache(0),
	}
	if storeThumb != "" && storeThumb != s.thumbprint {
		return nil, fmt.Errorf("load %s: certificate thumbprint %s does not match its name", certPath, s.thumbprint)
	}
	if s.clientCAs, err = loadCABundle(m.cfg.ClientCAFile); err != nil {
		return nil, err
	}
	s.backendCAs = s.clientCAs
	if m.cfg.BackendCAFile != "" {
		if s.backendCAs, err = loadCABundle(m.cfg.BackendCAFile); err != nil {
			return nil, err
		}
	}
	if m.cfg.CRLFile != "" {
		if s.crl, err = loadCRL(m.cfg.CRLFile, s.clientCAs.certs); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Leaf returns the active certificate, the one presented to peers as server
// and to backends and gateways as client. It must not be modified.
func (m *Manager) Leaf() *x509.Certificate { return m.cur.Load().cert.Leaf }

// SelfSigned reports whether the active certificate is self-signed, which
// peers that need a CA-issued certificate (Lync) refuse.
func (m *Manager) SelfSigned() bool { return m.cur.Load().selfSigned }

// NotAfter returns the expiry of the current material by role: "server"
// (the active certificate), "client_ca" (the earliest expiry in
// client_ca_file, absent when the bundle is empty) and "backend_ca" (only
// when backend_ca_file is set separately). It is meant for an expiry gauge.
func (m *Manager) NotAfter() map[string]time.Time {
	s := m.cur.Load()
	out := map[string]time.Time{"server": s.cert.Leaf.NotAfter}
	if t := earliestNotAfter(s.clientCAs.certs); !t.IsZero() {
		out["client_ca"] = t
	}
	if m.cfg.BackendCAFile != "" {
		if t := earliestNotAfter(s.backendCAs.certs); !t.IsZero() {
			out["backend_ca"] = t
		}
	}
	return out
}
