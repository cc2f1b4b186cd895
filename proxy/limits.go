package proxy

import (
	"net/netip"
	"sync"
	"time"
)

// admission counts the connections that are accepted (handshaking or
// open) overall and per source address, and the handshakes in progress.
type admission struct {
	mu         sync.Mutex
	total      int
	perIP      map[netip.Addr]int
	handshakes int
	// newConns is each source address's rate of new connections.
	newConns rateLimiter
}

// admit decides at Accept whether a new connection from ip may proceed, and
// counts it; it returns the refusal reason (a metric label) otherwise.
func (s *Server) admit(ip netip.Addr, tp string) string {
	l := s.cfg.Limits
	a := &s.admission
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.total >= l.MaxConnections:
		return "max_connections"
	case a.perIP[ip] >= l.MaxConnectionsPerPeer:
		return "max_connections_per_peer"
	case tp != "TCP" && a.handshakes >= l.MaxHandshakes:
		return "max_handshakes"
	case !a.newConns.allow(ip.String(), l.NewConnectionsPerSecond, time.Now()):
		return "connection_rate"
	}
	a.total++
	a.perIP[ip]++
	if tp != "TCP" {
		a.handshakes++
	}
	return ""
}

// release forgets a connection admitted by admit.
func (s *Server) release(ip netip.Addr) {
	a := &s.admission
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if a.perIP[ip]--; a.perIP[ip] <= 0 {
		delete(a.perIP, ip)
	}
}

// releaseHandshake frees the handshake slot admit took.
func (s *Server) releaseHandshake() {
	a := &s.admission
	a.mu.Lock()
	defer a.mu.Unlock()
	a.handshakes--
}

// maxBuckets bounds a rateLimiter's table before it drops the buckets that
// refilled (keyed by source address, a flood from many addresses would
// otherwise grow it without end).
const maxBuckets = 4096

// prune drops the buckets that are full again, which a new one would
// equal: at any rate, a bucket refills from empty to its burst (twice the
// rate) in two seconds.
func (r *rateLimiter) prune(now time.Time) {
	for k, b := range r.buckets {
		if now.Sub(b.last) >= 2*time.Second {
			delete(r.buckets, k)
		}
	}
}

// rateLimiter is a token bucket per key (a gateway's name, a source
// address): perSecond tokens a second, bursts up to twice that.
type rateLimiter struct {
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// allow takes a token for gateway g at now, or reports that it has none.
func (r *rateLimiter) allow(g string, perSecond int, now time.Time) bool {
	if perSecond <= 0 {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.buckets == nil {
		r.buckets = map[string]*bucket{}
	}
	b := r.buckets[g]
	burst := float64(2 * perSecond)
	if b == nil {
		if len(r.buckets) >= maxBuckets {
			r.prune(now)
		}
		b = &bucket{tokens: burst, last: now}
		r.buckets[g] = b
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*float64(perSecond))
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
