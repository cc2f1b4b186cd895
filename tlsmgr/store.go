package tlsmgr

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
)

// The certificate store is a directory that a node owns (or that cluster
// nodes share as a mounted secret):
//
//	state_dir/certs/<thumbprint>.crt   PEM, leaf then chain (0644)
//	state_dir/certs/<thumbprint>.key   PEM PKCS#8 (0600)
//	state_dir/active                   the active thumbprint, one line
//
// The thumbprint is the lowercase hex SHA-256 of the leaf's DER, the value
// an administrator passes to `cert enable`. Files are written to a temporary
// name and renamed, so a reader (a running daemon reloading) never sees a
// half-written certificate or active pointer.
type store struct {
	dir string
}

const (
	storeCertsDir  = "certs"
	storeActive    = "active"
	selfSignedLife = 365 * 24 * time.Hour
)

// Thumbprint returns the lowercase hex SHA-256 of the certificate's DER
// encoding, the name under which the store keeps it.
func Thumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

func (s store) paths(thumb string) (certPath, keyPath string) {
	base := filepath.Join(s.dir, storeCertsDir, thumb)
	return base + ".crt", base + ".key"
}

// active returns the active thumbprint, or "" when none is set.
func (s store) active() (string, error) {
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
func (s store) activePaths() (certPath, keyPath, thumb string, ok bool, err error) {
	thumb, err = s.active()
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
func (s store) ensureActive(log *zap.Logger) error {
	if err := os.MkdirAll(filepath.Join(s.dir, storeCertsDir), 0o700); err != nil {
		return fmt.Errorf("state_dir %s: %w", s.dir, err)
	}
	thumb, err := s.active()
	if err != nil || thumb != "" {
		return err
	}
	host, _ := os.Hostname()
	chain, key, err := newSelfSigned(host, time.Now())
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

// add writes a certificate chain and its key under their thumbprint and
// returns it. The key is written first, so a .crt never exists without its
// .key.
func (s store) add(chain []*x509.Certificate, key crypto.Signer) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("empty certificate chain")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("marshal key: %w", err)
	}
	var certPEM []byte
	for _, c := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	thumb := Thumbprint(chain[0])
	certPath, keyPath := s.paths(thumb)
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", err
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return "", err
	}
	return thumb, nil
}

// setActive points the store at thumb.
func (s store) setActive(thumb string) error {
	return writeFileAtomic(filepath.Join(s.dir, storeActive), []byte(thumb+"\n"), 0o644)
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

// newSelfSigned creates the default certificate: ECDSA P-256, CN host,
// SANs host and "localhost", valid for a year from five minutes ago (to
// tolerate a peer's clock running slightly behind), for server and client
// authentication since umrouter is both to its peers.
func newSelfSigned(host string, now time.Time) ([]*x509.Certificate, crypto.Signer, error) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	names := []string{"localhost"}
	if host != "" && host != "localhost" {
		names = []string{host, "localhost"}
	} else {
		host = "localhost"
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              names,
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(selfSignedLife),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return []*x509.Certificate{cert}, key, nil
}
