package tlsmgr

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"os"
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

	cur        atomic.Pointer[snapshot]
	reloadMu   sync.Mutex        // serialises reloads; readers never take it
	lastInputs [sha256.Size]byte // digest of the last attempt's inputs; under reloadMu
	onReload   atomic.Pointer[func(error)]

	// Test hooks. watching is called once Watch has its watches in place,
	// so a test can change files knowing the change will be seen; checked
	// after each look at the files Watch takes, with whether it reloaded.
	watching func()

	// watchingCh is closed once a Watch has its watches in place.
	watchingCh   chan struct{}
	watchingOnce sync.Once
	checked      func(reloaded bool)

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
// allowed but refuses every TLS peer, and is logged at WARN, as is every
// entry of Warnings. log may be nil.
func Open(cfg Config, log *zap.Logger) (*Manager, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.Validate().Err(); err != nil {
		return nil, fmt.Errorf("tls config: %w", err)
	}
	m := &Manager{cfg: cfg, log: log, minVersion: tls.VersionTLS12, watchingCh: make(chan struct{})}
	if cfg.MinVersion == "1.3" {
		m.minVersion = tls.VersionTLS13
	}
	m.sessions.m = m
	if cfg.CertFile == "" {
		if err := (&Store{dir: cfg.StateDir}).ensureActive(log); err != nil {
			return nil, err
		}
	}
	in, err := m.read()
	if err != nil {
		return nil, err
	}
	snap, err := m.build(in, time.Now())
	if err != nil {
		return nil, err
	}
	m.lastInputs = in.digest()
	m.cur.Store(snap)
	m.logLoaded("tls material loaded", snap)
	return m, nil
}

// SetOnReload installs fn, called after every reload attempt, whatever
// triggered it (Reload, or Watch seeing a file change), with the attempt's
// result: nil when new material is in force, the reason otherwise. It is
// meant for counting reloads by result (tlsmgr imports no metrics): a caller
// that installs it should count there and not also at its Reload call site.
// Watch does not call it when a change event leaves every file's content as
// it was. fn is called without locks held, possibly from Watch's goroutine;
// it must not block for long. A nil fn removes the hook.
func (m *Manager) SetOnReload(fn func(err error)) {
	if fn == nil {
		m.onReload.Store(nil)
		return
	}
	m.onReload.Store(&fn)
}

// Reload re-reads every file (certificate and key or the store's active
// certificate, CA bundles, CRL), validates the result and swaps it in for
// new handshakes. On failure the current material stays in force and the
// error says which file was refused and why. Reload is safe to call
// concurrently with handshakes, with Watch and with itself. The caller logs
// a failure; a success is logged here at INFO, with Warnings at WARN.
func (m *Manager) Reload() error {
	m.reloadMu.Lock()
	err := m.reloadLocked(m.read())
	m.reloadMu.Unlock()
	m.notifyReload(err)
	return err
}

// reloadIfChanged is Watch's reload: it re-reads the files and reloads only
// when their content differs from that of the previous attempt, so that
// events for unrelated files in a watched directory, or repeated events for
// the same bad file, neither swap nor log nor count. It logs a refusal
// itself (there is no caller to do it) and reports whether it reloaded.
func (m *Manager) reloadIfChanged() (attempted bool, err error) {
	m.reloadMu.Lock()
	in, readErr := m.read()
	d := digestOf(in, readErr)
	if d == m.lastInputs {
		m.reloadMu.Unlock()
		return false, nil
	}
	err = m.reloadLocked(in, readErr)
	m.reloadMu.Unlock()
	if err != nil {
		m.log.Error("certificate files changed but were refused; the current certificate stays in force", zap.Error(err))
	}
	m.notifyReload(err)
	return true, err
}

func (m *Manager) reloadLocked(in *inputs, readErr error) error {
	m.lastInputs = digestOf(in, readErr)
	err := readErr
	var snap *snapshot
	if err == nil {
		snap, err = m.build(in, time.Now())
	}
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

func (m *Manager) notifyReload(err error) {
	if fn := m.onReload.Load(); fn != nil {
		(*fn)(err)
	}
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
	m.logWarnings(s)
}

// inputs are the bytes a snapshot is built from, read in one go so that a
// reload can tell whether anything changed before parsing.
type inputs struct {
	certPath, keyPath string
	storeThumb        string // the store's active thumbprint; "" with cert_file
	cert, key         []byte
	clientCA          []byte
	backendCA         []byte // nil without backend_ca_file
	crl               []byte // nil without crl_file
}

// read reads every file named by the configuration (or by the store's
// active pointer).
func (m *Manager) read() (*inputs, error) {
	in := &inputs{certPath: m.cfg.CertFile, keyPath: m.cfg.KeyFile}
	if in.certPath == "" {
		st := &Store{dir: m.cfg.StateDir}
		var ok bool
		var err error
		in.certPath, in.keyPath, in.storeThumb, ok, err = st.activePaths()
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("state_dir %s: no active certificate", m.cfg.StateDir)
		}
	}
	files := []struct {
		path string
		dst  *[]byte
	}{
		{in.certPath, &in.cert},
		{in.keyPath, &in.key},
		{m.cfg.ClientCAFile, &in.clientCA},
		{m.cfg.BackendCAFile, &in.backendCA},
		{m.cfg.CRLFile, &in.crl},
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", f.path, err)
		}
		*f.dst = b
	}
	return in, nil
}

// digest identifies the content of the inputs (paths included, since the
// store's active pointer changes the certificate path).
func (in *inputs) digest() [sha256.Size]byte {
	h := sha256.New()
	for _, b := range [][]byte{[]byte(in.certPath), []byte(in.keyPath), in.cert, in.key, in.clientCA, in.backendCA, in.crl} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// digestOf is the digest of an attempt: of its inputs, or of the error that
// prevented reading them, so the same unreadable file is reported once.
func digestOf(in *inputs, readErr error) [sha256.Size]byte {
	if readErr != nil {
		return sha256.Sum256([]byte("read error: " + readErr.Error()))
	}
	return in.digest()
}

// build validates the inputs and makes a snapshot of them.
func (m *Manager) build(in *inputs, now time.Time) (*snapshot, error) {
	cert, err := parseKeyPair(in.certPath, in.cert, in.keyPath, in.key, now)
	if err != nil {
		return nil, err
	}
	s := &snapshot{
		cert:       cert,
		thumbprint: Thumbprint(cert.Leaf),
		source:     in.certPath,
		selfSigned: IsSelfSigned(cert.Leaf),
		sessions:   tls.NewLRUClientSessionCache(0),
	}
	if in.storeThumb != "" && in.storeThumb != s.thumbprint {
		return nil, fmt.Errorf("load %s: certificate thumbprint %s does not match its name", in.certPath, s.thumbprint)
	}
	s.clientCAs = newCABundle()
	if m.cfg.ClientCAFile != "" {
		if s.clientCAs, err = parseCABundle(m.cfg.ClientCAFile, in.clientCA); err != nil {
			return nil, err
		}
	}
	s.backendCAs = s.clientCAs
	if m.cfg.BackendCAFile != "" {
		if s.backendCAs, err = parseCABundle(m.cfg.BackendCAFile, in.backendCA); err != nil {
			return nil, err
		}
	}
	if m.cfg.CRLFile != "" {
		if s.crl, err = parseCRL(m.cfg.CRLFile, in.crl, s.clientCAs.certs); err != nil {
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

// Watching returns a channel closed once Watch has its watches in place:
// from then on, a change on disk is seen. Callers that change files right
// after starting Watch (tests, a supervisor) wait on it.
func (m *Manager) Watching() <-chan struct{} { return m.watchingCh }
