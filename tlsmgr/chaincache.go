package tlsmgr

import (
	"crypto/sha256"
	"crypto/x509"
	"sync"
	"time"
)

// chainCache remembers, for one CA bundle, the chains x509 built from a
// peer's presented certificates: a gateway reconnects, or resumes a
// session, with the certificates it presented before, and the signature
// checks of a chain cost more than the rest of the check together. What
// depends on the moment (validity of every certificate of the chain,
// revocation) is checked on every use; what does not (the signatures, the
// chain to a root of this bundle, the key usage) is what is remembered.
// A reload builds new bundles, hence new caches: nothing survives a change
// of trust.
type chainCache struct {
	mu     sync.Mutex
	chains map[[sha256.Size]byte][][]*x509.Certificate
}

// maxCachedChains bounds a cache; at the bound it starts again empty (a
// deployment has as many distinct peer certificates as gateways).
const maxCachedChains = 1024

func newChainCache() *chainCache {
	return &chainCache{chains: map[[sha256.Size]byte][][]*x509.Certificate{}}
}

// chainKey identifies a presented chain and the usage it was checked for.
func chainKey(certs []*x509.Certificate, usage x509.ExtKeyUsage) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte{byte(usage)})
	for _, c := range certs {
		h.Write(c.Raw)
		h.Write([]byte{0})
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// get returns the remembered chains whose every certificate is valid at
// now; none when there are no such chains (the caller then verifies in
// full, and reports why).
func (c *chainCache) get(k [sha256.Size]byte, now time.Time) [][]*x509.Certificate {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	chains := c.chains[k]
	c.mu.Unlock()
	var valid [][]*x509.Certificate
	for _, chain := range chains {
		ok := true
		for _, cert := range chain {
			if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
				ok = false
				break
			}
		}
		if ok {
			valid = append(valid, chain)
		}
	}
	return valid
}

func (c *chainCache) put(k [sha256.Size]byte, chains [][]*x509.Certificate) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.chains) >= maxCachedChains {
		clear(c.chains)
	}
	c.chains[k] = chains
}
