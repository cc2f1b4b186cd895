package proxy

import (
	"context"
	"math/rand/v2"
	"net"
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

// handshakesInProgress is how many handshakes admit let start and that
// have not finished.
func (s *Server) handshakesInProgress() int {
	a := &s.admission
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.handshakes
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

// Connections refused at accept are held open, unread, for about
// refusedHold before they are closed, at most maxHeldRefusals at a time
// (past that they are closed at once). A peer reconnecting in a tight
// loop, a flood or a gateway's runaway retry, then waits on a handshake
// that never comes instead of getting a reset at once and trying again
// thousands of times a second: each attempt costs umrouter an accept and a
// close, and the box the flooder's CPU, which the gateways that behave
// need. The bound keeps the file descriptors this costs small beside
// max_connections.
//
// Each hold is jittered(refusedHold): connections refused together (a
// flooder's, when its address's bucket runs dry) would otherwise be closed
// together, reconnect together and find the bucket refilled: measured with
// bench/fairness.sh, 8 handshake-flood workers made 22 handshakes within 50
// ms every 1.1 s, and the other gateway's calls that met such a burst
// waited 10-50 ms. Spread out, the same flood takes the tokens one at a
// time as they come.
const (
	refusedHold     = time.Second
	maxHeldRefusals = 1024
)

// jittered is d on average: uniformly random in [d/2, 3d/2). Waits that
// peers were given at the same moment then end at different moments, and
// what those peers do next does not arrive as one burst.
func jittered(d time.Duration) time.Duration {
	return d/2 + rand.N(d)
}

// refusalHold keeps refused connections until their time is up. Holding
// costs no goroutine per connection: one loop closes them.
type refusalHold struct {
	mu      sync.Mutex
	conns   []heldConn
	stopped bool // run has ended: nothing is held any more
}

type heldConn struct {
	conn  net.Conn
	until time.Time
}

// hold keeps nc until jittered(refusedHold) after now; false when the hold is
// full (the caller closes nc at once).
func (h *refusalHold) hold(nc net.Conn, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || len(h.conns) >= maxHeldRefusals {
		return false
	}
	h.conns = append(h.conns, heldConn{conn: nc, until: now.Add(jittered(refusedHold))})
	return true
}

// closeDue closes the connections whose time is up by now; every one when
// all is set. It looks at every held connection (at most maxHeldRefusals,
// ten times a second), which is cheaper than keeping them in order.
func (h *refusalHold) closeDue(now time.Time, all bool) {
	h.mu.Lock()
	h.stopped = h.stopped || all
	var due []net.Conn
	kept := h.conns[:0]
	for _, hc := range h.conns {
		if all || !now.Before(hc.until) {
			due = append(due, hc.conn)
		} else {
			kept = append(kept, hc)
		}
	}
	clear(h.conns[len(kept):])
	h.conns = kept
	h.mu.Unlock()
	for _, c := range due { // outside the lock: a close may block briefly
		_ = c.Close()
	}
}

// run closes held connections as their time comes, and all of them when
// ctx ends.
func (h *refusalHold) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(refusedHold / 10)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			h.closeDue(time.Time{}, true)
			return
		case now := <-tick.C:
			h.closeDue(now, false)
		}
	}
}
