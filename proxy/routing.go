package proxy

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/umrouter/umrouter/dialplan"
)

// routing is the part of the configuration that a reload replaces while
// calls run: gateways, dial plans, the backend pool and the startup mode.
// It is immutable once published; handlers read the current one without
// locking. node_name, advertise and limits are fixed for the life of the
// process (they are written into dialogs' Record-Route or size its buffers).
type routing struct {
	gen         uint64
	startupMode string
	listen      ListenConfig
	backends    BackendsConfig
	plans       dialplan.Plans
	gateways    []Gateway
	byName      map[string]*Gateway
	byAddr      map[string]*Gateway // lowercased address
	byIP        map[netip.Addr]*Gateway
	// huntGroups are each gateway's hunt groups (by name) as dialplan
	// takes them, converted once per reload rather than per new call.
	huntGroups map[string][]dialplan.HuntGroup
	pool       *backendPool
}

// rt returns the routing in force.
func (s *Server) rt() *routing { return s.routing.Load() }

// buildRouting makes the routing for cfg. Backend servers that old already
// knows keep their state (health, connections, call counts), so a reload
// loses nothing on them.
func (s *Server) buildRouting(ctx context.Context, cfg Config, plans dialplan.Plans, old *routing) *routing {
	r := &routing{
		startupMode: cfg.StartupMode,
		listen:      cfg.Listen,
		backends:    cfg.Backends,
		plans:       plans,
		gateways:    append([]Gateway(nil), cfg.Gateways...),
		byName:      map[string]*Gateway{},
		byAddr:      map[string]*Gateway{},
		byIP:        map[netip.Addr]*Gateway{},
		huntGroups:  map[string][]dialplan.HuntGroup{},
	}
	if old != nil {
		r.gen = old.gen + 1
	}
	for i := range r.gateways {
		g := &r.gateways[i]
		r.byName[g.Name] = g
		r.huntGroups[g.Name] = huntGroups(g)
		r.byAddr[strings.ToLower(g.Address)] = g
		if ip, err := netip.ParseAddr(g.Address); err == nil {
			r.byIP[ip.Unmap()] = g
		}
	}
	var prev *backendPool
	if old != nil {
		prev = old.pool
	}
	r.pool = newBackendPool(cfg.Backends, s.m, prev)
	if ctx != nil && (cfg.StartupMode != "tls" || cfg.Listen.UDP != "") {
		s.resolveGateways(ctx, r)
	}
	return r
}

// resolveGateways maps gateway FQDNs to addresses, for peers identified by
// source address (plain TCP and UDP). A name that does not resolve is logged
// and skipped: its gateway can still connect over TLS.
func (s *Server) resolveGateways(ctx context.Context, r *routing) {
	for i := range r.gateways {
		g := &r.gateways[i]
		if _, err := netip.ParseAddr(g.Address); err == nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ips, err := net.DefaultResolver.LookupNetIP(rctx, "ip", g.Address)
		cancel()
		if err != nil {
			s.log.Warn("gateway address does not resolve; it can only connect over TLS", zap.String("gateway", g.Name), zap.Error(err))
			continue
		}
		for _, ip := range ips {
			r.byIP[ip.Unmap()] = g
		}
	}
}

// Apply replaces gateways, dial plans, backends and the startup mode of a
// running server, without dropping a connection or a call: listeners that
// the new startup mode no longer wants are closed (their established
// connections stay), new ones are opened. An invalid configuration, or one
// whose new listener cannot be bound, is refused and the running one stays.
// node_name, advertise and limits cannot change without a restart.
func (s *Server) Apply(cfg Config, plans dialplan.Plans) error {
	if errs := cfg.Validate(plans); len(errs) > 0 {
		return errs
	}
	if cfg.NodeName != s.cfg.NodeName || cfg.Advertise != s.cfg.Advertise || cfg.Limits != s.cfg.Limits || cfg.Listen.UDP != s.cfg.Listen.UDP || cfg.Listen.DTLS != s.cfg.Listen.DTLS {
		return errRestartNeeded
	}
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	old := s.rt()
	next := s.buildRouting(s.ctx, cfg, plans, old)
	if err := s.setListeners(next); err != nil {
		return err
	}
	s.routing.Store(next)
	s.log.Info("configuration applied", zap.String("startup_mode", next.startupMode),
		zap.Int("gateways", len(next.gateways)), zap.Int("dial_plans", len(next.plans)), zap.Int("backends", len(next.backends.Servers)))
	return nil
}
