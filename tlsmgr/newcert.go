package tlsmgr

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// KeyType names a key algorithm and size for new certificates and requests.
type KeyType string

// Key types for NewSelfSigned and NewRequest. ECDSA P-256 is the default:
// its handshakes cost the server about a third of RSA-2048's CPU. RSA
// exists for peers that still cannot do ECDSA (older SBCs and PBXs).
const (
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyRSA2048   KeyType = "rsa-2048"
	KeyRSA3072   KeyType = "rsa-3072"
)

// KeyTypes lists the accepted key types, for usage messages.
var KeyTypes = []KeyType{KeyECDSAP256, KeyRSA2048, KeyRSA3072}

func generateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case "", KeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("unknown key type %q: want %s", kt, joinKeyTypes())
}

func joinKeyTypes() string {
	s := make([]string, len(KeyTypes))
	for i, k := range KeyTypes {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

// keyTypeOf names a public key the way KeyType does ("ecdsa-p256",
// "rsa-2048"), extended to what imports may bring ("ecdsa-p384",
// "ed25519").
func keyTypeOf(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ecdsa-" + strings.ToLower(strings.ReplaceAll(k.Curve.Params().Name, "-", ""))
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa-%d", k.N.BitLen())
	case ed25519.PublicKey:
		return "ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

// Names are the subject alternative names of a new certificate or request.
type Names struct {
	// DNSNames are host names; a wildcard is allowed as the leftmost label
	// only ("*.example.com").
	DNSNames []string
	// IPAddresses are for peers that reach us by address (lab setups).
	IPAddresses []net.IP
}

// check normalises the names (lower case, no trailing dot) and refuses
// what no CA would sign and no peer would match.
func (n Names) check() (Names, error) {
	if len(n.DNSNames) == 0 && len(n.IPAddresses) == 0 {
		return n, errors.New("at least one DNS name or IP address is required")
	}
	out := Names{IPAddresses: n.IPAddresses}
	for _, d := range n.DNSNames {
		d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
		if err := checkDNSName(d); err != nil {
			return n, err
		}
		out.DNSNames = append(out.DNSNames, d)
	}
	return out, nil
}

func checkDNSName(d string) error {
	if d == "" || len(d) > 253 {
		return fmt.Errorf("DNS name %q: empty or longer than 253 characters", d)
	}
	if net.ParseIP(d) != nil {
		return fmt.Errorf("DNS name %q is an IP address: give it as an IP address", d)
	}
	for i, label := range strings.Split(d, ".") {
		if label == "*" && i == 0 && strings.Count(d, ".") >= 2 {
			continue
		}
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("DNS name %q: label %q is not a valid host name label", d, label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("DNS name %q: %q is not allowed in a host name (wildcards only as the whole leftmost label)", d, r)
			}
		}
	}
	return nil
}

// firstName is the name a certificate's CN repeats.
func (n Names) firstName() string {
	if len(n.DNSNames) > 0 {
		return n.DNSNames[0]
	}
	return n.IPAddresses[0].String()
}

// SelfSignedOptions describes a self-signed certificate.
type SelfSignedOptions struct {
	Names
	// Key defaults to KeyECDSAP256.
	Key KeyType
	// Days is the validity from now, 365 when zero, at most 3650.
	Days int
}

// NewSelfSigned creates a self-signed certificate (CN the first name, for
// server and client authentication) with a new key, stores it and returns
// its description. It is not enabled.
func (s *Store) NewSelfSigned(o SelfSignedOptions) (CertInfo, error) {
	names, err := o.Names.check()
	if err != nil {
		return CertInfo{}, err
	}
	life := selfSignedLife
	switch {
	case o.Days < 0 || o.Days > 3650:
		return CertInfo{}, fmt.Errorf("validity of %d days: want 1 to 3650", o.Days)
	case o.Days > 0:
		life = time.Duration(o.Days) * 24 * time.Hour
	}
	chain, key, err := newSelfSigned(names, o.Key, life, time.Now())
	if err != nil {
		return CertInfo{}, err
	}
	thumb, err := s.add(chain, key)
	if err != nil {
		return CertInfo{}, err
	}
	active, err := s.Active()
	if err != nil {
		return CertInfo{}, err
	}
	return s.info(thumb, active)
}

// newSelfSigned creates a self-signed certificate valid from five minutes
// ago (to tolerate a peer's clock running slightly behind) for life, for
// server and client authentication since umrouter is both to its peers.
func newSelfSigned(names Names, kt KeyType, life time.Duration, now time.Time) ([]*x509.Certificate, crypto.Signer, error) {
	key, err := generateKey(kt)
	if err != nil {
		return nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := key.(*rsa.PrivateKey); ok {
		usage |= x509.KeyUsageKeyEncipherment // TLS 1.2 RSA key exchange
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names.firstName()},
		DNSNames:              names.DNSNames,
		IPAddresses:           names.IPAddresses,
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(life),
		KeyUsage:              usage,
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

// randomSerial returns a positive serial of up to 128 bits, unpredictable
// as RFC 5280 recommends.
func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil
}

// CertInfo describes a stored certificate, as `umrouter cert list` shows it.
type CertInfo struct {
	// Thumbprint is the lowercase hex SHA-256 of the leaf's DER.
	Thumbprint  string    `json:"thumbprint"`
	Subject     string    `json:"subject"`
	DNSNames    []string  `json:"dns_names"`
	IPAddresses []string  `json:"ip_addresses"`
	URIs        []string  `json:"uris"`
	Issuer      string    `json:"issuer"`
	Serial      string    `json:"serial"` // hex
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	SelfSigned  bool      `json:"self_signed"`
	Active      bool      `json:"active"`
	// KeyType is "ecdsa-p256", "rsa-2048", ...
	KeyType string `json:"key_type"`
	// Chain counts the certificates stored with the leaf (CA certificates).
	Chain int `json:"chain"`
	// Problem says why the certificate cannot be enabled (expired, key
	// missing or not matching, broken chain); empty when it can.
	Problem string `json:"problem,omitempty"`
}

// SANs lists the subject alternative names as openssl prints them:
// "DNS:name", "IP:addr", "URI:uri".
func (c CertInfo) SANs() []string {
	var out []string
	for _, d := range c.DNSNames {
		out = append(out, "DNS:"+d)
	}
	for _, ip := range c.IPAddresses {
		out = append(out, "IP:"+ip)
	}
	for _, u := range c.URIs {
		out = append(out, "URI:"+u)
	}
	return out
}

func describeCert(chain []*x509.Certificate) CertInfo {
	leaf := chain[0]
	info := CertInfo{
		Thumbprint:  Thumbprint(leaf),
		Subject:     leaf.Subject.String(),
		DNSNames:    append([]string{}, leaf.DNSNames...),
		IPAddresses: []string{},
		URIs:        []string{},
		Issuer:      leaf.Issuer.String(),
		Serial:      leaf.SerialNumber.Text(16),
		NotBefore:   leaf.NotBefore.UTC(),
		NotAfter:    leaf.NotAfter.UTC(),
		SelfSigned:  IsSelfSigned(leaf),
		KeyType:     keyTypeOf(leaf.PublicKey),
		Chain:       len(chain) - 1,
	}
	for _, ip := range leaf.IPAddresses {
		info.IPAddresses = append(info.IPAddresses, ip.String())
	}
	for _, u := range leaf.URIs {
		info.URIs = append(info.URIs, u.String())
	}
	return info
}
