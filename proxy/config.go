package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/umrouter/umrouter/dialplan"
	"github.com/umrouter/umrouter/internal/configerr"
)

// Config is the part of the configuration document that the proxy owns:
// the top-level identity keys and the listen, gateways, backends and limits
// sections.
type Config struct {
	// NodeName names this node in logs, metrics and the Record-Route user part.
	NodeName string `yaml:"node_name"`
	// Advertise is the host written in our Via and Record-Route headers.
	Advertise string `yaml:"advertise"`
	// StartupMode selects the gateway-facing listeners: tcp, tls or dual.
	StartupMode string         `yaml:"startup_mode"`
	Listen      ListenConfig   `yaml:"listen"`
	Gateways    []Gateway      `yaml:"gateways"`
	Backends    BackendsConfig `yaml:"backends"`
	Limits      Limits         `yaml:"limits"`
}

// ListenConfig is the `listen:` section. An empty address disables a listener.
type ListenConfig struct {
	TLS  string `yaml:"tls"`
	TCP  string `yaml:"tcp"`
	UDP  string `yaml:"udp"`
	DTLS string `yaml:"dtls"`
}

// Gateway is one "UM IP gateway": a VoIP gateway, IP-PBX, SBC or Lync pool
// that may send calls to the UM backends.
type Gateway struct {
	Name string `yaml:"name"`
	// Address is the FQDN that the gateway's certificate must name (or an IP
	// for TCP-only lab setups).
	Address         string      `yaml:"address"`
	Port            int         `yaml:"port"`
	Kind            string      `yaml:"kind"`
	DialPlan        string      `yaml:"dial_plan"`
	OutcallsAllowed *bool       `yaml:"outcalls_allowed"`
	HuntGroups      []HuntGroup `yaml:"hunt_groups"`
	// RequestsPerSecond, when set, is this gateway's own limit on new
	// out-of-dialog requests, in place of limits.requests_per_second:
	// gateways differ in size (a branch gateway, a Lync pool), and one
	// limit for all is either too high for the small ones or too low for
	// the big one. What a gateway is allowed is load its neighbours share
	// with it even when it floods (see bench/fairness.sh).
	RequestsPerSecond int `yaml:"requests_per_second"`
}

// requestRate is g's limit on new out-of-dialog requests per second (0:
// none), given limits.requests_per_second as the default.
func (g *Gateway) requestRate(byDefault int) int {
	if g.RequestsPerSecond > 0 {
		return g.RequestsPerSecond
	}
	return byDefault
}

// HuntGroup ties a pilot number on a gateway to a dial plan.
type HuntGroup struct {
	Pilot    string `yaml:"pilot"`
	DialPlan string `yaml:"dial_plan"`
}

// BackendsConfig is the `backends:` section: the UM backend pool.
type BackendsConfig struct {
	Mode      string `yaml:"mode"`      // proxy | redirect
	Transport string `yaml:"transport"` // tls | tcp | udp
	Balance   string `yaml:"balance"`   // round-robin | least-calls | weighted
	// AllowPlaintext permits secured plans to reach non-loopback backends over tcp/udp.
	AllowPlaintext bool         `yaml:"allow_plaintext"`
	Health         HealthConfig `yaml:"health"`
	Servers        []Backend    `yaml:"servers"`
}

// HealthConfig tunes the OPTIONS probes of the backend pool.
type HealthConfig struct {
	// Probe turns the OPTIONS probes on (default) or off; off, a server is
	// only marked down by failures of real traffic (passive checks).
	Probe     *bool         `yaml:"probe"`
	Interval  time.Duration `yaml:"interval"`
	Timeout   time.Duration `yaml:"timeout"`
	DownAfter int           `yaml:"down_after"`
	UpAfter   int           `yaml:"up_after"`
}

// Backend is one UM server of the pool.
type Backend struct {
	// Address is host:port.
	Address string `yaml:"address"`
	Weight  int    `yaml:"weight"`
}

// Limits protect the daemon, and every well-behaved peer, from one peer.
type Limits struct {
	// MaxConnections bounds open connections and associations overall.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerPeer bounds them per source IP address.
	MaxConnectionsPerPeer int `yaml:"max_connections_per_peer"`
	// NewConnectionsPerSecond bounds how fast one source IP address may
	// open connections (bursts of twice that); beyond it new connections
	// are refused at accept, before any handshake work (held unread for
	// about a second, then closed: see refusedHold). Gateways keep their
	// connections: a peer that opens hundreds a second is flooding, and
	// each TLS handshake costs ~1 ms of CPU.
	NewConnectionsPerSecond int `yaml:"new_connections_per_second"`
	// MaxMessageBytes bounds one SIP message (413, then the connection closes).
	MaxMessageBytes int `yaml:"max_message_bytes"`
	// MaxHandshakes bounds TLS/DTLS handshakes in progress; beyond it new
	// connections are refused at accept like the excess of
	// NewConnectionsPerSecond. Of those in progress, at most all the CPUs
	// but one compute at a time (see handshakeGate).
	MaxHandshakes int `yaml:"max_handshakes"`
	// HandshakeTimeout bounds one handshake.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// IdleTimeout closes a connection on which nothing arrived for that long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MessageTimeout bounds the arrival of one message once its first byte
	// came (a peer trickling bytes is cut off).
	MessageTimeout time.Duration `yaml:"message_timeout"`
	// RequestsPerSecond bounds new out-of-dialog requests per gateway
	// (503 with Retry-After beyond it); requests of established calls are
	// never limited. 0 means no limit. A gateway's own requests_per_second
	// replaces it for that gateway.
	RequestsPerSecond int `yaml:"requests_per_second"`
	// MaxTransactions bounds transactions in progress; beyond it new
	// requests get 503 with Retry-After.
	MaxTransactions int `yaml:"max_transactions"`
	// DrainTimeout bounds how long a stopping daemon waits for transactions
	// in progress.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
}

// SetDefaults fills every zero value that has a documented default.
func (c *Config) SetDefaults() {
	if c.NodeName == "" {
		c.NodeName = "umrouter"
	}
	if c.StartupMode == "" {
		c.StartupMode = "tls"
	}
	for i := range c.Gateways {
		g := &c.Gateways[i]
		if g.Port == 0 {
			g.Port = 5061
		}
		if g.Kind == "" {
			g.Kind = "gateway"
		}
	}
	b := &c.Backends
	if b.Mode == "" {
		b.Mode = "proxy"
	}
	if b.Transport == "" {
		b.Transport = "tls"
	}
	if b.Balance == "" {
		b.Balance = "round-robin"
	}
	if b.Health.Probe == nil {
		on := true
		b.Health.Probe = &on
	}
	if b.Health.Interval == 0 {
		b.Health.Interval = 5 * time.Second
	}
	if b.Health.Timeout == 0 {
		b.Health.Timeout = 2 * time.Second
	}
	if b.Health.DownAfter == 0 {
		b.Health.DownAfter = 3
	}
	if b.Health.UpAfter == 0 {
		b.Health.UpAfter = 2
	}
	for i := range b.Servers {
		if b.Servers[i].Weight == 0 {
			b.Servers[i].Weight = 1
		}
	}
	l := &c.Limits
	if l.MaxConnections == 0 {
		l.MaxConnections = 20000
	}
	if l.MaxMessageBytes == 0 {
		l.MaxMessageBytes = 65535
	}
	if l.HandshakeTimeout == 0 {
		l.HandshakeTimeout = 5 * time.Second
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = 300 * time.Second
	}
	if l.MaxConnectionsPerPeer == 0 {
		l.MaxConnectionsPerPeer = 1000
	}
	if l.NewConnectionsPerSecond == 0 {
		l.NewConnectionsPerSecond = 200
	}
	if l.MaxHandshakes == 0 {
		l.MaxHandshakes = 256
	}
	if l.MessageTimeout == 0 {
		l.MessageTimeout = 10 * time.Second
	}
	if l.MaxTransactions == 0 {
		l.MaxTransactions = 50000
	}
	if l.DrainTimeout == 0 {
		l.DrainTimeout = 10 * time.Second
	}
}

// Validate reports every problem of the proxy's sections, checking
// references into plans. Call SetDefaults first. Paths are document paths.
func (c *Config) Validate(plans dialplan.Plans) configerr.List {
	var errs configerr.List
	if c.Advertise == "" {
		errs.Add("advertise", "required: the host name written in Via and Record-Route")
	} else if strings.ContainsAny(c.Advertise, " :;<>") && !isIP(c.Advertise) {
		errs.Add("advertise", "not a host name: %q", c.Advertise)
	}
	if !isRouteToken(c.NodeName) {
		errs.Add("node_name", "%q: only letters, digits and - . _ ~ (it is the user part of umrouter's Record-Route)", c.NodeName)
	}
	for i, pl := range plans {
		if pl.Name != "" && !isRouteToken(pl.Name) {
			errs.Add(fmt.Sprintf("dial_plans[%d].name", i), "%q: only letters, digits and - . _ ~ (umrouter's Record-Route carries it)", pl.Name)
		}
	}
	switch c.StartupMode {
	case "tcp", "tls", "dual":
	default:
		errs.Add("startup_mode", "must be tcp, tls or dual, got %q", c.StartupMode)
	}
	for key, addr := range map[string]string{"listen.tls": c.Listen.TLS, "listen.tcp": c.Listen.TCP, "listen.udp": c.Listen.UDP, "listen.dtls": c.Listen.DTLS} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs.Add(key, "not host:port: %v", err)
		}
	}
	if (c.StartupMode == "tls" || c.StartupMode == "dual") && c.Listen.TLS == "" {
		errs.Add("listen.tls", "required when startup_mode is %s", c.StartupMode)
	}
	if (c.StartupMode == "tcp" || c.StartupMode == "dual") && c.Listen.TCP == "" {
		errs.Add("listen.tcp", "required when startup_mode is %s", c.StartupMode)
	}

	names := map[string]bool{}
	addrs := map[string]bool{}
	for i, g := range c.Gateways {
		at := fmt.Sprintf("gateways[%d]", i)
		switch {
		case g.Name == "":
			errs.Add(at+".name", "required")
		case names[g.Name]:
			errs.Add(at+".name", "duplicate gateway %q", g.Name)
		case !isRouteToken(g.Name):
			errs.Add(at+".name", "%q: only letters, digits and - . _ ~ (umrouter's Record-Route carries it)", g.Name)
		}
		names[g.Name] = true
		switch {
		case g.Address == "":
			errs.Add(at+".address", "required: the FQDN its certificate names")
		case !isHostName(g.Address):
			errs.Add(at+".address", "not an FQDN or IP address: %q", g.Address)
		case addrs[strings.ToLower(g.Address)]:
			errs.Add(at+".address", "duplicate gateway address %q", g.Address)
		}
		addrs[strings.ToLower(g.Address)] = true
		if g.Port < 1 || g.Port > 65535 {
			errs.Add(at+".port", "must be 1-65535, got %d", g.Port)
		}
		if g.RequestsPerSecond < 0 {
			errs.Add(at+".requests_per_second", "must not be negative (0: limits.requests_per_second)")
		}
		switch g.Kind {
		case "gateway", "pbx", "sbc", "lync":
		default:
			errs.Add(at+".kind", "must be gateway, pbx, sbc or lync, got %q", g.Kind)
		}
		if g.DialPlan == "" && len(g.HuntGroups) == 0 {
			errs.Add(at+".dial_plan", "required (or hunt_groups)")
		} else if g.DialPlan != "" {
			if _, ok := plans.Lookup(g.DialPlan); !ok {
				errs.Add(at+".dial_plan", "no dial plan named %q", g.DialPlan)
			}
		}
		for j, h := range g.HuntGroups {
			hat := fmt.Sprintf("%s.hunt_groups[%d]", at, j)
			if h.Pilot == "" {
				errs.Add(hat+".pilot", "required")
			}
			if _, ok := plans.Lookup(h.DialPlan); !ok {
				errs.Add(hat+".dial_plan", "no dial plan named %q", h.DialPlan)
			}
		}
		if g.Kind == "lync" {
			// Lync / Skype for Business routes on SIP URIs: its calls, and
			// outcalls through it, only go through sip-uri plans.
			if pl, ok := plans.Lookup(g.DialPlan); ok && pl.URIType != dialplan.SIPURI {
				errs.Add(at+".dial_plan", "a lync gateway needs a dial plan with uri_type sip-uri, %q is %s", pl.Name, uriTypeName(pl.URIType))
			}
			for j, h := range g.HuntGroups {
				if pl, ok := plans.Lookup(h.DialPlan); ok && pl.URIType != dialplan.SIPURI {
					errs.Add(fmt.Sprintf("%s.hunt_groups[%d].dial_plan", at, j), "a lync gateway needs a dial plan with uri_type sip-uri, %q is %s", pl.Name, uriTypeName(pl.URIType))
				}
			}
		}
	}

	b := c.Backends
	switch b.Mode {
	case "proxy", "redirect":
	default:
		errs.Add("backends.mode", "must be proxy or redirect, got %q", b.Mode)
	}
	switch b.Transport {
	case "tls", "tcp", "udp":
	default:
		errs.Add("backends.transport", "must be tls, tcp or udp, got %q", b.Transport)
	}
	switch b.Balance {
	case "round-robin", "least-calls", "weighted":
	default:
		errs.Add("backends.balance", "must be round-robin, least-calls or weighted, got %q", b.Balance)
	}
	if b.Health.Interval < 100*time.Millisecond {
		errs.Add("backends.health.interval", "must be at least 100ms, got %s", b.Health.Interval)
	}
	if b.Health.Timeout <= 0 || b.Health.Timeout > b.Health.Interval {
		errs.Add("backends.health.timeout", "must be positive and not above interval, got %s", b.Health.Timeout)
	}
	if b.Health.DownAfter < 1 {
		errs.Add("backends.health.down_after", "must be at least 1")
	}
	if b.Health.UpAfter < 1 {
		errs.Add("backends.health.up_after", "must be at least 1")
	}
	for i, s := range b.Servers {
		at := fmt.Sprintf("backends.servers[%d]", i)
		host, port, err := net.SplitHostPort(s.Address)
		if err != nil || host == "" || port == "" {
			errs.Add(at+".address", "not host:port: %q", s.Address)
		} else if !isHostName(host) {
			errs.Add(at+".address", "not a host name or IP: %q", host)
		}
		if s.Weight < 0 {
			errs.Add(at+".weight", "must not be negative, got %d", s.Weight)
		}
	}

	if b.Transport != "tls" && !b.AllowPlaintext {
		for _, pl := range plans {
			if !pl.RequiresTLS() {
				continue
			}
			for i, sv := range b.Servers {
				if host, _, err := net.SplitHostPort(sv.Address); err == nil && !isLoopback(host) {
					errs.Add(fmt.Sprintf("backends.servers[%d].address", i),
						"dial plan %q is %s but calls would leave over plain %s to %s: use transport tls, a loopback backend, or allow_plaintext: true", pl.Name, pl.Security, b.Transport, host)
				}
			}
			break
		}
	}

	l := c.Limits
	if l.MaxConnections < 1 {
		errs.Add("limits.max_connections", "must be at least 1")
	}
	if l.MaxMessageBytes < 1024 || l.MaxMessageBytes > 1<<20 {
		errs.Add("limits.max_message_bytes", "must be between 1024 and 1048576, got %d", l.MaxMessageBytes)
	}
	if l.HandshakeTimeout <= 0 {
		errs.Add("limits.handshake_timeout", "must be positive")
	}
	if l.IdleTimeout <= 0 {
		errs.Add("limits.idle_timeout", "must be positive")
	}
	if l.MaxConnectionsPerPeer < 1 {
		errs.Add("limits.max_connections_per_peer", "must be at least 1")
	}
	if l.NewConnectionsPerSecond < 1 {
		errs.Add("limits.new_connections_per_second", "must be at least 1")
	}
	if l.MaxHandshakes < 1 {
		errs.Add("limits.max_handshakes", "must be at least 1")
	}
	if l.MessageTimeout <= 0 {
		errs.Add("limits.message_timeout", "must be positive")
	}
	if l.RequestsPerSecond < 0 {
		errs.Add("limits.requests_per_second", "must not be negative (0: no limit)")
	}
	if l.MaxTransactions < 1 {
		errs.Add("limits.max_transactions", "must be at least 1")
	}
	if l.DrainTimeout <= 0 {
		errs.Add("limits.drain_timeout", "must be positive")
	}
	return errs
}

func uriTypeName(t dialplan.URIType) string {
	if t == "" {
		return string(dialplan.TelephoneExtension)
	}
	return string(t)
}

// isLoopback reports whether host is a loopback address or "localhost":
// the container-sidecar case, where the UM server shares the host.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.IsLoopback()
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(strings.Trim(s, "[]"))
	return err == nil
}

// isHostName accepts an IP address or a DNS name made of letters, digits,
// hyphens and dots.
func isHostName(s string) bool {
	if isIP(s) {
		return true
	}
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// isRouteToken reports whether name can go into a SIP URI parameter or
// user part as it is (RFC 3261 section 25.1, unreserved characters): node,
// gateway and dial plan names are written into umrouter's Record-Route
// entries unescaped, and read back from the Route of in-dialog requests.
func isRouteToken(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}
