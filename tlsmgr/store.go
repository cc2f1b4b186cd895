package tlsmgr

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Store is the certificate store in a state directory, the one a node owns
// (or that cluster nodes share as a mounted volume):
//
//	state_dir/certs/<thumbprint>.crt      PEM, leaf then chain (0644)
//	state_dir/certs/<thumbprint>.key      PEM PKCS#8 (0600)
//	state_dir/requests/<id>.key|.csr      pending certificate requests
//	state_dir/active                      the active thumbprint, one line
//
// The thumbprint is the lowercase hex SHA-256 of the leaf's DER, the value
// an administrator passes to `cert enable`; a request's id is the hex
// SHA-256 of its public key (SubjectPublicKeyInfo), which is how the signed
// certificate finds its key on import. Files are written to a temporary
// name and renamed, so a reader (a running daemon reloading) never sees a
// half-written certificate or active pointer; a running Manager watching
// the directory switches when the active pointer changes.
//
// Every operation that adds or enables a certificate validates it first:
// the key matches, the certificate is valid now, the chain builds. The
// Store holds no lock: operations from several processes at once are safe
// as far as each file goes, but two administrators enabling and removing
// the same certificate at the same moment is not arbitrated.
type Store struct {
	dir string
}

const (
	storeCertsDir    = "certs"
	storeRequestsDir = "requests"
	storeActive      = "active"
	selfSignedLife   = 365 * 24 * time.Hour
)

// OpenStore opens the store in dir, creating dir and its certs and requests
// subdirectories (mode 0700) when missing. It does not create a default
// certificate; Open does that on the daemon's first start.
func OpenStore(dir string) (*Store, error) {
	if dir == "" {
		return nil, errors.New("certificate store: no state directory given")
	}
	for _, d := range []string{dir, filepath.Join(dir, storeCertsDir), filepath.Join(dir, storeRequestsDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("state_dir %s: %w", dir, err)
		}
	}
	return &Store{dir: dir}, nil
}

// Dir returns the store's state directory.
func (s *Store) Dir() string { return s.dir }

// Thumbprint returns the lowercase hex SHA-256 of the certificate's DER
// encoding, the name under which the store keeps it.
func Thumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// normalizeID accepts a thumbprint or request id as an administrator may
// paste it (upper case, with colons or spaces, as Windows and openssl print
// fingerprints) and returns the store's spelling.
func normalizeID(id string) (string, error) {
	n := strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(strings.TrimSpace(id)))
	if !validThumbprint(n) {
		return "", fmt.Errorf("%q is not a SHA-256 thumbprint (64 hex digits)", id)
	}
	return n, nil
}

func (s *Store) paths(thumb string) (certPath, keyPath string) {
	base := filepath.Join(s.dir, storeCertsDir, thumb)
	return base + ".crt", base + ".key"
}

// Active returns the active thumbprint, or "" when none is set.
func (s *Store) Active() (string, error) {
	p := filepath.Join(s.dir, storeActive)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	thumb := strings.TrimSpace(string(b))
	// The value becomes a file name: refuse anything but a thumbprint so a
	// tampered file cannot point outside the store.
	if !validThumbprint(thumb) {
		return "", fmt.Errorf("%s: %q is not a SHA-256 thumbprint (64 hex digits)", p, thumb)
	}
	return thumb, nil
}

func validThumbprint(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// activePaths returns the files of the active certificate; ok is false when
// the store has none.
func (s *Store) activePaths() (certPath, keyPath, thumb string, ok bool, err error) {
	thumb, err = s.Active()
	if err != nil || thumb == "" {
		return "", "", "", false, err
	}
	certPath, keyPath = s.paths(thumb)
	return certPath, keyPath, thumb, true, nil
}

// ensureActive makes sure the store has an active certificate, creating the
// directory and a self-signed default on first start, as the source product
// does. A store whose active file names a missing certificate is an error,
// not an occasion to mint a new identity silently.
func (s *Store) ensureActive(log *zap.Logger) error {
	if err := os.MkdirAll(filepath.Join(s.dir, storeCertsDir), 0o700); err != nil {
		return fmt.Errorf("state_dir %s: %w", s.dir, err)
	}
	thumb, err := s.Active()
	if err != nil || thumb != "" {
		return err
	}
	host, _ := os.Hostname()
	chain, key, err := newSelfSigned(Names{DNSNames: defaultNames(host)}, KeyECDSAP256, selfSignedLife, time.Now())
	if err != nil {
		return fmt.Errorf("state_dir %s: create self-signed certificate: %w", s.dir, err)
	}
	thumb, err = s.add(chain, key)
	if err != nil {
		return fmt.Errorf("state_dir %s: store self-signed certificate: %w", s.dir, err)
	}
	if err := s.setActive(thumb); err != nil {
		return fmt.Errorf("state_dir %s: %w", s.dir, err)
	}
	certPath, _ := s.paths(thumb)
	leaf := chain[0]
	log.Info("no certificate configured: created a self-signed default; peers that require a CA-issued certificate (Lync) will refuse it",
		zap.String("cert_file", certPath),
		zap.String("thumbprint", thumb),
		zap.Strings("dns_names", leaf.DNSNames),
		zap.Time("not_after", leaf.NotAfter))
	return nil
}

// defaultNames are the SANs of the self-signed default: the host name and
// localhost.
func defaultNames(host string) []string {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" || host == "localhost" {
		return []string{"localhost"}
	}
	return []string{host, "localhost"}
}

// add writes a certificate chain and its key under their thumbprint and
// returns it. The key is written first, so a .crt never exists without its
// .key.
func (s *Store) add(chain []*x509.Certificate, key crypto.Signer) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("empty certificate chain")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("marshal key: %w", err)
	}
	thumb := Thumbprint(chain[0])
	certPath, keyPath := s.paths(thumb)
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", err
	}
	if err := writeFileAtomic(certPath, encodeCertificates(chain), 0o644); err != nil {
		return "", err
	}
	return thumb, nil
}

func encodeCertificates(chain []*x509.Certificate) []byte {
	var out []byte
	for _, c := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// setActive points the store at thumb.
func (s *Store) setActive(thumb string) error {
	return writeFileAtomic(filepath.Join(s.dir, storeActive), []byte(thumb+"\n"), 0o644)
}

// Enable makes the certificate with the given thumbprint the active one,
// after checking that its key matches, that it is valid now and that its
// chain builds; a certificate that fails is not enabled and the error says
// why. A Manager watching the store (Watch) switches new handshakes to it
// within about a second; one that is not watching switches on Reload.
func (s *Store) Enable(thumbprint string) (CertInfo, error) {
	thumb, err := normalizeID(thumbprint)
	if err != nil {
		return CertInfo{}, err
	}
	certPath, keyPath := s.paths(thumb)
	if _, err := os.Stat(certPath); errors.Is(err, fs.ErrNotExist) {
		return CertInfo{}, fmt.Errorf("no certificate %s in %s (see `umrouter cert list`)", thumb, s.dir)
	}
	cert, err := loadKeyPair(certPath, keyPath, time.Now())
	if err != nil {
		return CertInfo{}, fmt.Errorf("certificate %s not enabled: %w", thumb, err)
	}
	if got := Thumbprint(cert.Leaf); got != thumb {
		return CertInfo{}, fmt.Errorf("certificate %s not enabled: %s holds certificate %s", thumb, certPath, got)
	}
	if err := s.setActive(thumb); err != nil {
		return CertInfo{}, err
	}
	return s.info(thumb, thumb)
}

// Export returns the public certificate with the given thumbprint, leaf
// first, then its chain as stored: what a gateway, PBX or SBC needs in its
// trust store. The key is never part of it.
func (s *Store) Export(thumbprint string) ([]*x509.Certificate, error) {
	thumb, err := normalizeID(thumbprint)
	if err != nil {
		return nil, err
	}
	chain, err := s.chain(thumb)
	if err != nil {
		return nil, err
	}
	return chain, nil
}

func (s *Store) chain(thumb string) ([]*x509.Certificate, error) {
	certPath, _ := s.paths(thumb)
	data, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no certificate %s in %s (see `umrouter cert list`)", thumb, s.dir)
	}
	if err != nil {
		return nil, err
	}
	chain, err := parseCertificates(data)
	if err == nil && len(chain) == 0 {
		err = errors.New("no CERTIFICATE PEM block")
	}
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", certPath, err)
	}
	return chain, nil
}

// Remove deletes the certificate with the given thumbprint and its key, or
// the pending request with that id. It refuses the active certificate:
// enable another one first, so the daemon never loses its identity.
func (s *Store) Remove(id string) error {
	n, err := normalizeID(id)
	if err != nil {
		return err
	}
	active, err := s.Active()
	if err != nil {
		return err
	}
	if n == active {
		return fmt.Errorf("certificate %s is the active certificate; enable another one before removing it", n)
	}
	certPath, keyPath := s.paths(n)
	if _, err := os.Stat(certPath); err == nil {
		// Certificate first, key last: the reverse of add, so no .crt is
		// ever left without its key.
		if err := os.Remove(certPath); err != nil {
			return err
		}
		if err := os.Remove(keyPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	reqKey, reqCSR := s.requestPaths(n)
	if _, err := os.Stat(reqKey); err == nil {
		if err := os.Remove(reqCSR); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return os.Remove(reqKey)
	}
	return fmt.Errorf("no certificate or pending request %s in %s (see `umrouter cert list`)", n, s.dir)
}

// List returns every certificate of the store, the active one first, then
// by expiry, latest first. A file that cannot be read is listed with
// Problem set rather than failing the listing, so that it can be removed.
func (s *Store) List() ([]CertInfo, error) {
	active, err := s.Active()
	if err != nil {
		return nil, err
	}
	names, err := filepath.Glob(filepath.Join(s.dir, storeCertsDir, "*.crt"))
	if err != nil {
		return nil, err
	}
	var out []CertInfo
	for _, n := range names {
		thumb := strings.TrimSuffix(filepath.Base(n), ".crt")
		if !validThumbprint(thumb) {
			continue // not ours (an editor's backup, a temporary file)
		}
		info, err := s.info(thumb, active)
		if err != nil {
			info = CertInfo{Thumbprint: thumb, Active: thumb == active, Problem: err.Error()}
		}
		out = append(out, info)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Active != out[j].Active {
			return out[i].Active
		}
		return out[i].NotAfter.After(out[j].NotAfter)
	})
	return out, nil
}

// info describes the stored certificate thumb; Problem says what would
// stop it from being enabled.
func (s *Store) info(thumb, active string) (CertInfo, error) {
	chain, err := s.chain(thumb)
	if err != nil {
		return CertInfo{}, err
	}
	info := describeCert(chain)
	info.Active = thumb == active
	if info.Thumbprint != thumb {
		info.Problem = fmt.Sprintf("file named %s holds certificate %s", thumb, info.Thumbprint)
		return info, nil
	}
	certPath, keyPath := s.paths(thumb)
	if _, err := loadKeyPair(certPath, keyPath, time.Now()); err != nil {
		info.Problem = err.Error()
	}
	return info, nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(mode); err == nil {
		if _, err = f.Write(data); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
