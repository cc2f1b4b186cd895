package tlsmgr

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// This file turns files into validated material. Every function here is
// pure apart from reading files, so a Reload can build a complete snapshot
// and only then publish it.

// loadKeyPair reads a PEM certificate file (leaf, then chain) and its PEM
// key and validates them with parseKeyPair.
func loadKeyPair(certPath, keyPath string, now time.Time) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", keyPath, err)
	}
	return parseKeyPair(certPath, certPEM, keyPath, keyPEM, now)
}

// parseKeyPair parses a PEM certificate chain (leaf first) and its PEM key
// (PKCS#8, SEC 1 EC or PKCS#1 RSA) and checks what a peer would otherwise
// find out the hard way: the key belongs to the leaf, every certificate of
// the chain is valid at now, and each one is signed by the next. The paths
// only name the files in errors.
func parseKeyPair(certPath string, certPEM []byte, keyPath string, keyPEM []byte, now time.Time) (*tls.Certificate, error) {
	chain, err := parseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", certPath, err)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("load %s: no CERTIFICATE PEM block", certPath)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", keyPath, err)
	}
	leaf := chain[0]
	if !publicKeyEqual(key.Public(), leaf.PublicKey) {
		return nil, fmt.Errorf("load %s: private key does not match the certificate in %s", keyPath, certPath)
	}
	if err := checkChain(chain, now); err != nil {
		return nil, fmt.Errorf("load %s: %w", certPath, err)
	}
	ders := make([][]byte, len(chain))
	for i, c := range chain {
		ders[i] = c.Raw
	}
	return &tls.Certificate{Certificate: ders, PrivateKey: key, Leaf: leaf}, nil
}

// checkChain checks a chain as it will be presented, leaf first: every
// certificate is valid at now and signed by the one after it. A chain that
// stops below a root is fine (peers hold the root); one in the wrong order,
// with a stranger in it or with an expired intermediate is not, because
// peers would refuse it at their next handshake.
func checkChain(chain []*x509.Certificate, now time.Time) error {
	for i, c := range chain {
		if err := checkValidity(c, now); err != nil {
			if i == 0 {
				return err
			}
			return fmt.Errorf("chain certificate #%d: %w", i+1, err)
		}
		if i+1 == len(chain) {
			break
		}
		parent := chain[i+1]
		if !bytes.Equal(c.RawIssuer, parent.RawSubject) {
			return fmt.Errorf("chain certificate #%d %s is not the issuer of #%d %s (issued by %q)",
				i+2, describe(parent), i+1, describe(c), c.Issuer.String())
		}
		if err := c.CheckSignatureFrom(parent); err != nil {
			return fmt.Errorf("chain certificate #%d %s did not sign #%d %s: %w", i+2, describe(parent), i+1, describe(c), err)
		}
	}
	return nil
}

func checkValidity(c *x509.Certificate, now time.Time) error {
	switch {
	case now.Before(c.NotBefore):
		return fmt.Errorf("certificate %s is not valid before %s", describe(c), c.NotBefore.UTC().Format(time.RFC3339))
	case now.After(c.NotAfter):
		return fmt.Errorf("certificate %s expired at %s", describe(c), c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// describe names a certificate the way an operator finds it again: subject
// and serial.
func describe(c *x509.Certificate) string {
	return fmt.Sprintf("%q (serial %x)", c.Subject.String(), c.SerialNumber)
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// parseCertificates returns the CERTIFICATE blocks of a PEM document in
// order. Other block types are skipped, so a combined cert+key file works.
// Text that is not PEM at all is an error: a DER file given where PEM is
// expected must not read as "no certificates".
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate #%d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 && len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("not a PEM file")
	}
	return certs, nil
}

// parsePrivateKey returns the first private key of a PEM document.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PRIVATE KEY PEM block")
		}
		var (
			k   any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported; store the key unencrypted with mode 0600")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", strings.ToLower(block.Type), err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: key type %T cannot sign", strings.ToLower(block.Type), k)
		}
		return s, nil
	}
}

// caBundle is a parsed trust bundle.
type caBundle struct {
	pool  *x509.CertPool // never nil: a nil pool would mean the system roots
	certs []*x509.Certificate
	// verified caches the chains built to pool (see chainCache).
	verified *chainCache
}

// newCABundle is a bundle that trusts nobody yet, with its own chain cache.
func newCABundle() caBundle {
	return caBundle{pool: x509.NewCertPool(), verified: newChainCache()}
}

// parseCABundle parses a PEM bundle read from path. An empty file yields an
// empty pool, which trusts nobody.
func parseCABundle(path string, data []byte) (caBundle, error) {
	b := newCABundle()
	certs, err := parseCertificates(data)
	if err != nil {
		return b, fmt.Errorf("load %s: %w", path, err)
	}
	for _, c := range certs {
		b.pool.AddCert(c)
	}
	b.certs = certs
	return b, nil
}

// earliestNotAfter returns the first expiry among certs (zero when none).
func earliestNotAfter(certs []*x509.Certificate) time.Time {
	var t time.Time
	for _, c := range certs {
		if t.IsZero() || c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}

// revocations is a parsed CRL together with the CA that signed it.
type revocations struct {
	issuer  *x509.Certificate
	serials map[string]time.Time // big-endian serial bytes -> revocation time
	next    time.Time
}

// parseCRL parses a PEM or DER CRL read from path and checks its signature against the CAs
// of the client bundle, so a forged or misplaced CRL is refused at load
// rather than silently matching nothing.
func parseCRL(path string, data []byte, cas []*x509.Certificate) (*revocations, error) {
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("load %s: PEM block %q, want X509 CRL", path, block.Type)
		}
		der = block.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	var issuer *x509.Certificate
	for _, ca := range cas {
		if bytes.Equal(ca.RawSubject, crl.RawIssuer) && crl.CheckSignatureFrom(ca) == nil {
			issuer = ca
			break
		}
	}
	if issuer == nil {
		return nil, fmt.Errorf("load %s: CRL issued by %q is not signed by any CA of client_ca_file", path, crl.Issuer.String())
	}
	r := &revocations{issuer: issuer, serials: make(map[string]time.Time, len(crl.RevokedCertificateEntries)), next: crl.NextUpdate}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil {
			r.serials[string(e.SerialNumber.Bytes())] = e.RevocationTime
		}
	}
	return r, nil
}

// check returns an error when a certificate of chain is revoked by this
// CRL. chain is a verified chain, leaf first: element i was signed by
// element i+1, so only elements whose parent is the CRL's issuer are
// within the CRL's scope.
func (r *revocations) check(chain []*x509.Certificate) error {
	if r == nil {
		return nil
	}
	for i := 0; i+1 < len(chain); i++ {
		parent := chain[i+1]
		if !bytes.Equal(parent.RawSubject, r.issuer.RawSubject) ||
			!bytes.Equal(parent.RawSubjectPublicKeyInfo, r.issuer.RawSubjectPublicKeyInfo) {
			continue
		}
		if at, ok := r.serials[string(chain[i].SerialNumber.Bytes())]; ok {
			return fmt.Errorf("certificate %s revoked at %s by the CRL of %q",
				describe(chain[i]), at.UTC().Format(time.RFC3339), r.issuer.Subject.String())
		}
	}
	return nil
}
