package tlsmgr

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// ErrWrongPassword is returned (wrapped) by Import for a PKCS#12 file whose
// password is not the one given.
var ErrWrongPassword = errors.New("PKCS#12: wrong password")

// Imported describes a certificate Import added.
type Imported struct {
	CertInfo
	// Request is the id of the pending request whose key this certificate
	// completed, "" when the file brought its own key.
	Request string `json:"completed_request,omitempty"`
}

// Import adds a certificate to the store from the content of a file:
//
//   - PEM: certificates (leaf and chain, in any order) with or without a
//     private key (PKCS#8, SEC 1 EC or PKCS#1 RSA; not encrypted);
//   - PKCS#12 (.pfx, .p12) with its password (empty for none);
//   - DER: one certificate, or several concatenated (a .cer).
//
// Without a key in the file, the certificate must complete a pending
// request (NewRequest): the request's key is used and the request removed.
// The leaf is the certificate whose public key matches the key; the others
// must form its chain (each signing the previous one); a certificate that
// does not belong to the chain is refused. Before anything is written the
// leaf and chain must be valid now. The certificate is not enabled.
func (s *Store) Import(data []byte, password string) (Imported, error) {
	certs, key, err := decodeImport(data, password)
	if err != nil {
		return Imported{}, err
	}
	if len(certs) == 0 {
		return Imported{}, errors.New("no certificate in the file")
	}
	var leaf *x509.Certificate
	var request string
	if key != nil {
		for _, c := range certs {
			if publicKeyEqual(key.Public(), c.PublicKey) {
				leaf = c
				break
			}
		}
		if leaf == nil {
			return Imported{}, fmt.Errorf("the private key matches none of the %d certificates in the file", len(certs))
		}
	} else {
		for _, c := range certs {
			k, id, ok, err := s.pendingKey(c.PublicKey)
			if err != nil {
				return Imported{}, err
			}
			if ok {
				leaf, key, request = c, k, id
				break
			}
		}
		if leaf == nil {
			return Imported{}, fmt.Errorf("the file holds no private key, and none of its %d certificates answers a pending request of this store (`umrouter cert request`)", len(certs))
		}
	}
	chain, err := orderChain(leaf, certs)
	if err != nil {
		return Imported{}, err
	}
	if err := checkChain(chain, time.Now()); err != nil {
		return Imported{}, err
	}
	thumb, err := s.add(chain, key)
	if err != nil {
		return Imported{}, err
	}
	if request != "" {
		keyPath, csrPath := s.requestPaths(request)
		_ = os.Remove(csrPath)
		_ = os.Remove(keyPath)
	}
	active, err := s.Active()
	if err != nil {
		return Imported{}, err
	}
	info, err := s.info(thumb, active)
	if err != nil {
		return Imported{}, err
	}
	return Imported{CertInfo: info, Request: request}, nil
}

// decodeImport recognises the format of an imported file and returns its
// certificates and key (nil when it has none).
func decodeImport(data []byte, password string) ([]*x509.Certificate, crypto.Signer, error) {
	if bytes.Contains(data, []byte("-----BEGIN ")) {
		certs, err := parseCertificates(data)
		if err != nil {
			return nil, nil, err
		}
		if !hasPEMKey(data) {
			return certs, nil, nil
		}
		key, err := parsePrivateKey(data)
		if err != nil {
			return nil, nil, err
		}
		return certs, key, nil
	}
	if certs, err := x509.ParseCertificates(data); err == nil && len(certs) > 0 {
		return certs, nil, nil
	}
	k, leaf, cas, err := pkcs12.DecodeChain(data, password)
	if errors.Is(err, pkcs12.ErrIncorrectPassword) {
		return nil, nil, ErrWrongPassword
	}
	if err != nil {
		return nil, nil, fmt.Errorf("neither PEM, DER nor a readable PKCS#12 file: %w", err)
	}
	key, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("PKCS#12: key type %T cannot sign", k)
	}
	return append([]*x509.Certificate{leaf}, cas...), key, nil
}

func hasPEMKey(data []byte) bool {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return false
		}
		if strings.HasSuffix(block.Type, "PRIVATE KEY") {
			return true
		}
	}
}

// orderChain returns leaf followed by its issuers found among certs, each
// verified to sign the previous one. Duplicates are dropped; a certificate
// that is not on the leaf's path is an error, since serving a stranger
// would only confuse peers and hints at a wrong file.
func orderChain(leaf *x509.Certificate, certs []*x509.Certificate) ([]*x509.Certificate, error) {
	var rest []*x509.Certificate
	for _, c := range certs {
		dup := c.Equal(leaf)
		for _, r := range rest {
			dup = dup || c.Equal(r)
		}
		if !dup {
			rest = append(rest, c)
		}
	}
	chain := []*x509.Certificate{leaf}
	for cur := leaf; len(rest) > 0 && !IsSelfSigned(cur); {
		next := -1
		for i, p := range rest {
			if bytes.Equal(cur.RawIssuer, p.RawSubject) && cur.CheckSignatureFrom(p) == nil {
				next = i
				break
			}
		}
		if next < 0 {
			break
		}
		cur = rest[next]
		chain = append(chain, cur)
		rest = append(rest[:next], rest[next+1:]...)
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("certificate %s in the file is not part of the chain of %s", describe(rest[0]), describe(leaf))
	}
	return chain, nil
}
