package tlsmgr

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
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
)

// RequestOptions describes a certificate request (CSR).
type RequestOptions struct {
	Names
	// Subject is the requested subject as "CN=umrouter.example.com,
	// O=Contoso, OU=Voice, L=Redmond, ST=WA, C=US" (RFC 4514 order does
	// not matter; "\," escapes a comma) or openssl's
	// "/CN=.../O=.../C=US". Attributes: CN, O, OU, L, ST (or S), C,
	// STREET, POSTALCODE, SERIALNUMBER. Without CN, the first name is used.
	Subject string
	// Key defaults to KeyECDSAP256.
	Key KeyType
}

// Request is a pending certificate request: its key waits in the store
// until the signed certificate is imported.
type Request struct {
	// ID is the hex SHA-256 of the request's public key
	// (SubjectPublicKeyInfo); `cert remove ID` drops the request.
	ID          string    `json:"id"`
	Subject     string    `json:"subject"`
	DNSNames    []string  `json:"dns_names"`
	IPAddresses []string  `json:"ip_addresses"`
	KeyType     string    `json:"key_type"`
	Created     time.Time `json:"created"`
}

// NewRequest creates a key and a certificate signing request for it. The
// key stays in the store (mode 0600) as a pending request; Import of the
// certificate a CA signs from the returned CSR (PEM) completes it, so the
// key never leaves the node.
func (s *Store) NewRequest(o RequestOptions) (Request, []byte, error) {
	names, err := o.Names.check()
	if err != nil {
		return Request{}, nil, err
	}
	subject, err := ParseSubject(o.Subject)
	if err != nil {
		return Request{}, nil, err
	}
	if subject.CommonName == "" {
		subject.CommonName = names.firstName()
	}
	key, err := generateKey(o.Key)
	if err != nil {
		return Request{}, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     subject,
		DNSNames:    names.DNSNames,
		IPAddresses: names.IPAddresses,
	}, key)
	if err != nil {
		return Request{}, nil, fmt.Errorf("create certificate request: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return Request{}, nil, err
	}
	id, err := publicKeyID(key.Public())
	if err != nil {
		return Request{}, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Request{}, nil, err
	}
	if err := os.MkdirAll(filepath.Join(s.dir, storeRequestsDir), 0o700); err != nil {
		return Request{}, nil, fmt.Errorf("state_dir %s: %w", s.dir, err)
	}
	keyPath, csrPath := s.requestPaths(id)
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return Request{}, nil, err
	}
	if err := writeFileAtomic(csrPath, csrPEM, 0o644); err != nil {
		return Request{}, nil, err
	}
	return describeRequest(id, csr, time.Now()), csrPEM, nil
}

// Requests lists the pending requests, oldest first.
func (s *Store) Requests() ([]Request, error) {
	names, err := filepath.Glob(filepath.Join(s.dir, storeRequestsDir, "*.csr"))
	if err != nil {
		return nil, err
	}
	var out []Request
	for _, n := range names {
		id := strings.TrimSuffix(filepath.Base(n), ".csr")
		if !validThumbprint(id) {
			continue
		}
		data, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("load %s: no CERTIFICATE REQUEST PEM block", n)
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", n, err)
		}
		var created time.Time
		if fi, err := os.Stat(n); err == nil {
			created = fi.ModTime().UTC()
		}
		out = append(out, describeRequest(id, csr, created))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

func describeRequest(id string, csr *x509.CertificateRequest, created time.Time) Request {
	r := Request{
		ID:          id,
		Subject:     csr.Subject.String(),
		DNSNames:    append([]string{}, csr.DNSNames...),
		IPAddresses: []string{},
		KeyType:     keyTypeOf(csr.PublicKey),
		Created:     created.UTC().Truncate(time.Second),
	}
	for _, ip := range csr.IPAddresses {
		r.IPAddresses = append(r.IPAddresses, ip.String())
	}
	return r
}

func (s *Store) requestPaths(id string) (keyPath, csrPath string) {
	base := filepath.Join(s.dir, storeRequestsDir, id)
	return base + ".key", base + ".csr"
}

// pendingKey returns the key of the pending request whose public key is
// pub; ok is false when there is none.
func (s *Store) pendingKey(pub crypto.PublicKey) (key crypto.Signer, id string, ok bool, err error) {
	id, err = publicKeyID(pub)
	if err != nil {
		return nil, "", false, err
	}
	keyPath, _ := s.requestPaths(id)
	data, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", false, nil
	}
	if err != nil {
		return nil, "", false, err
	}
	key, err = parsePrivateKey(data)
	if err != nil {
		return nil, "", false, fmt.Errorf("load %s: %w", keyPath, err)
	}
	return key, id, true, nil
}

// publicKeyID is the hex SHA-256 of a public key's SubjectPublicKeyInfo.
func publicKeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// ParseSubject parses a distinguished name as RequestOptions.Subject
// describes it. An empty string is an empty name.
func ParseSubject(s string) (pkix.Name, error) {
	var n pkix.Name
	s = strings.TrimSpace(s)
	if s == "" {
		return n, nil
	}
	var parts []string
	if strings.HasPrefix(s, "/") {
		parts = splitUnescaped(s[1:], '/')
	} else {
		parts = splitUnescaped(s, ',')
	}
	for _, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		k = strings.ToUpper(strings.TrimSpace(k))
		v = unescapeDN(strings.TrimSpace(v))
		if !ok || k == "" || v == "" {
			return n, fmt.Errorf("subject %q: %q is not ATTRIBUTE=value", s, strings.TrimSpace(p))
		}
		switch k {
		case "CN":
			if n.CommonName != "" {
				return n, fmt.Errorf("subject %q: CN given twice", s)
			}
			n.CommonName = v
		case "O":
			n.Organization = append(n.Organization, v)
		case "OU":
			n.OrganizationalUnit = append(n.OrganizationalUnit, v)
		case "L":
			n.Locality = append(n.Locality, v)
		case "ST", "S":
			n.Province = append(n.Province, v)
		case "C":
			if len(v) != 2 {
				return n, fmt.Errorf("subject %q: C=%s: a country is a two-letter ISO 3166 code", s, v)
			}
			n.Country = append(n.Country, strings.ToUpper(v))
		case "STREET":
			n.StreetAddress = append(n.StreetAddress, v)
		case "POSTALCODE":
			n.PostalCode = append(n.PostalCode, v)
		case "SERIALNUMBER":
			n.SerialNumber = v
		default:
			return n, fmt.Errorf("subject %q: unknown attribute %q (known: CN, O, OU, L, ST, C, STREET, POSTALCODE, SERIALNUMBER)", s, k)
		}
	}
	return n, nil
}

// splitUnescaped splits s at sep, except where sep is escaped by a
// backslash (the escape stays, for unescapeDN).
func splitUnescaped(s string, sep byte) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // skip the escaped character
		case sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

func unescapeDN(v string) string {
	if !strings.Contains(v, `\`) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}
