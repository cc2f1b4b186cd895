package proxy

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/umrouter/umrouter/metrics"
)

// backendServer is one UM server of the pool.
type backendServer struct {
	addr   string // host:port as configured
	host   string
	port   int
	weight atomic.Int32 // replaced by a reload

	// downUntil is a Unix-nanosecond time before which no new call goes here
	// (a 503 with Retry-After: the server said so).
	downUntil atomic.Int64
	// suspectUntil is the same after a transport failure or silence, which
	// a busy machine can cause too: when every server is suspect, calls
	// still go to them rather than all getting 503 (see pick).
	suspectUntil atomic.Int64
	// ipPort is the resolved address, for UDP sends and for recognising the
	// server as the source of a datagram or the target of an in-dialog request.
	resolved atomic.Pointer[netip.AddrPort]

	// admin is the operator's state: AdminEnabled, AdminDisabled or AdminDrain.
	admin atomic.Int32
	// active counts calls at this server: INVITEs in progress and
	// established dialogs (least-calls balancing).
	active atomic.Int64
	// current is the smooth weighted round-robin counter, under pool.mu.
	current int

	// Health probe state (health.go).
	probeInFlight atomic.Bool
	probeDown     atomic.Bool
	fails, oks    atomic.Int64

	connMu sync.Mutex // serialises dialing
	conn   atomic.Pointer[streamConn]
}

// AdminState is an operator's decision about a backend server, as the
// source product's gateways have Enabled / Disabled / NoNewCalls.
type AdminState int32

// Administrative states.
const (
	// AdminEnabled: new calls and in-dialog requests.
	AdminEnabled AdminState = iota
	// AdminDisabled: no new calls and no health probes; in-dialog requests
	// of existing calls still pass, so no call is cut.
	AdminDisabled
	// AdminDrain (no-new-calls): existing dialogs continue, no new INVITE.
	AdminDrain
)

// String returns the state's name as configuration and the admin API write it.
func (a AdminState) String() string {
	switch a {
	case AdminDisabled:
		return "disabled"
	case AdminDrain:
		return "no-new-calls"
	}
	return "enabled"
}

// ParseAdminState reads a state name: enabled, disabled or no-new-calls (or drain).
func ParseAdminState(s string) (AdminState, bool) {
	switch s {
	case "enabled":
		return AdminEnabled, true
	case "disabled":
		return AdminDisabled, true
	case "no-new-calls", "drain":
		return AdminDrain, true
	}
	return 0, false
}

// backendPool chooses servers for new requests.
type backendPool struct {
	cfg     BackendsConfig
	servers []*backendServer
	next    atomic.Uint64
	mu      sync.Mutex // weighted selection
	m       *metrics.Metrics
}

// newBackendPool builds the pool of cfg, reusing prev's server of the same
// address (health, connection, call counts) so that a reload loses nothing.
func newBackendPool(cfg BackendsConfig, m *metrics.Metrics, prev *backendPool) *backendPool {
	p := &backendPool{cfg: cfg, m: m}
	for _, s := range cfg.Servers {
		if prev != nil {
			if b := prev.byAddr(s.Address); b != nil {
				b.weight.Store(int32(s.Weight))
				p.servers = append(p.servers, b)
				continue
			}
		}
		host, portStr, _ := net.SplitHostPort(s.Address)
		port, _ := strconv.Atoi(portStr)
		b := &backendServer{addr: s.Address, host: strings.ToLower(host), port: port}
		b.weight.Store(int32(s.Weight))
		if ip, err := netip.ParseAddr(host); err == nil {
			ap := netip.AddrPortFrom(ip.Unmap(), uint16(port))
			b.resolved.Store(&ap)
		}
		p.servers = append(p.servers, b)
		m.BackendUp.WithLabelValues(s.Address).Set(1)
	}
	return p
}

// resolve returns the server's address, resolving its host name once.
func (b *backendServer) resolve(ctx context.Context) (netip.AddrPort, error) {
	if ap := b.resolved.Load(); ap != nil {
		return *ap, nil
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", b.host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap := netip.AddrPortFrom(ips[0].Unmap(), uint16(b.port))
	b.resolved.Store(&ap)
	return ap, nil
}

// up reports whether b may take a new call: its probes pass and no
// failure or Retry-After keeps it away.
func (b *backendServer) up(now time.Time) bool {
	return !b.probeDown.Load() && now.UnixNano() >= b.downUntil.Load() && now.UnixNano() >= b.suspectUntil.Load()
}

// eligible reports whether b may take a new call now.
func (b *backendServer) eligible(now time.Time, tried []*backendServer) bool {
	return b.weight.Load() > 0 && AdminState(b.admin.Load()) == AdminEnabled && b.up(now) && !contains(tried, b)
}

// pick chooses a server for a new call by the configured balance, among
// those that are eligible and not in tried. When none is, a server that is
// only suspect (it failed a call, but its health probes pass and it asked
// for no Retry-After) is tried as a last resort, so that one overloaded
// moment does not turn every call into a 503. nil when none is left.
func (p *backendPool) pick(tried []*backendServer) *backendServer {
	if b := p.pickBalanced(tried); b != nil {
		return b
	}
	now := time.Now()
	start := int(p.next.Add(1) - 1)
	for i := range p.servers {
		b := p.servers[(start+i)%len(p.servers)]
		if b.weight.Load() > 0 && AdminState(b.admin.Load()) == AdminEnabled && !b.probeDown.Load() &&
			now.UnixNano() >= b.downUntil.Load() && !contains(tried, b) {
			return b
		}
	}
	return nil
}

// pickBalanced is pick's choice among eligible servers.
func (p *backendPool) pickBalanced(tried []*backendServer) *backendServer {
	n := len(p.servers)
	if n == 0 {
		return nil
	}
	now := time.Now()
	start := int(p.next.Add(1) - 1)
	switch p.cfg.Balance {
	case "weighted":
		return p.pickWeighted(now, tried)
	case "least-calls":
		var best *backendServer
		for i := 0; i < n; i++ {
			b := p.servers[(start+i)%n]
			if b.eligible(now, tried) && (best == nil || b.active.Load() < best.active.Load()) {
				best = b
			}
		}
		return best
	}
	for i := 0; i < n; i++ {
		b := p.servers[(start+i)%n]
		if b.eligible(now, tried) {
			return b
		}
	}
	return nil
}

// pickWeighted is smooth weighted round-robin (as nginx does): over any
// window, each server gets calls in proportion to its weight, interleaved.
func (p *backendPool) pickWeighted(now time.Time, tried []*backendServer) *backendServer {
	p.mu.Lock()
	defer p.mu.Unlock()
	var best *backendServer
	total := 0
	for _, b := range p.servers {
		if !b.eligible(now, tried) {
			continue
		}
		w := int(b.weight.Load())
		b.current += w
		total += w
		if best == nil || b.current > best.current {
			best = b
		}
	}
	if best != nil {
		best.current -= total
	}
	return best
}

func contains(list []*backendServer, b *backendServer) bool {
	for _, x := range list {
		if x == b {
			return true
		}
	}
	return false
}

// markDown keeps new calls away from b for d, as its Retry-After asked.
func (p *backendPool) markDown(b *backendServer, d time.Duration) {
	p.mark(b, &b.downUntil, d)
}

// markSuspect keeps new calls away from b for d after a failure of its
// own (transport error, silence), unless no other server is left.
func (p *backendPool) markSuspect(b *backendServer, d time.Duration) {
	p.mark(b, &b.suspectUntil, d)
}

func (p *backendPool) mark(b *backendServer, until *atomic.Int64, d time.Duration) {
	until.Store(time.Now().Add(d).UnixNano())
	p.m.BackendUp.WithLabelValues(b.addr).Set(0)
	time.AfterFunc(d, func() {
		if b.up(time.Now()) {
			p.m.BackendUp.WithLabelValues(b.addr).Set(1)
		}
	})
}

// anyUp reports whether at least one server can take a new call (as a
// last resort included: see pick).
func (p *backendPool) anyUp() bool {
	now := time.Now()
	for _, b := range p.servers {
		if b.weight.Load() > 0 && AdminState(b.admin.Load()) == AdminEnabled && !b.probeDown.Load() && now.UnixNano() >= b.downUntil.Load() {
			return true
		}
	}
	return false
}

// byHost returns the server whose host is name (for TLS peers identified by
// certificate).
func (p *backendPool) byHost(name string) (string, bool) {
	for _, b := range p.servers {
		if b.host == name {
			return b.addr, true
		}
	}
	return "", false
}

// byIP returns a server at ip (for plain TCP/UDP peers).
func (p *backendPool) byIP(ip netip.Addr) (string, bool) {
	for _, b := range p.servers {
		if ap := b.resolved.Load(); ap != nil && ap.Addr() == ip {
			return b.addr, true
		}
	}
	return "", false
}

// byAddr returns the server configured as addr.
func (p *backendPool) byAddr(addr string) *backendServer {
	for _, b := range p.servers {
		if b.addr == addr {
			return b
		}
	}
	return nil
}

// byTarget returns the server that host:port designates, so that in-dialog
// requests only ever leave toward configured servers.
func (p *backendPool) byTarget(host string, port int) *backendServer {
	host = strings.ToLower(strings.Trim(host, "[]"))
	ip, ipErr := netip.ParseAddr(host)
	for _, b := range p.servers {
		if port != 0 && port != b.port {
			continue
		}
		if b.host == host {
			return b
		}
		if ipErr == nil {
			if ap := b.resolved.Load(); ap != nil && ap.Addr() == ip.Unmap() {
				return b
			}
		}
	}
	return nil
}

// byResolved returns the server whose resolved address is ip:port: the
// cheap match for a datagram's source (byTarget covers the rest).
func (p *backendPool) byResolved(ip netip.Addr, port int) *backendServer {
	for _, b := range p.servers {
		if ap := b.resolved.Load(); ap != nil && b.port == port && ap.Addr().Unmap() == ip {
			return b
		}
	}
	return nil
}

// forget drops references to a closed connection.
func (p *backendPool) forget(c *streamConn) {
	for _, b := range p.servers {
		b.conn.CompareAndSwap(c, nil)
	}
}
