package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"
)

// clientFlags are the flags of every mode that connects to a SIP server
// over mutual TLS as a gateway.
type clientFlags struct {
	target      string
	cert, key   string
	ca          string
	serverName  string
	insecure    bool
	tlsVersion  string
	curves      string
	src         string
	domain      string
	pids        string
	otherPIDs   string
	dialTimeout time.Duration
	quiet       bool
	trace       bool
	cpuProfile  string

	procs   targetProcs
	others  targetProcs
	sources []netip.Addr
	nextSrc atomic.Uint64
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.target, "target", "127.0.0.1:5061", "SIP server to load, `host:port` (TLS)")
	fs.StringVar(&c.cert, "cert", "", "client (gateway) certificate `file`, PEM (chain after the leaf)")
	fs.StringVar(&c.key, "key", "", "client private key `file`, PEM")
	fs.StringVar(&c.ca, "ca", "", "CA `file` that signs the server certificate (default: system roots)")
	fs.StringVar(&c.serverName, "server-name", "", "TLS server name to verify and send as SNI (default: the target's host)")
	fs.BoolVar(&c.insecure, "insecure", false, "do not verify the server certificate")
	fs.StringVar(&c.tlsVersion, "tls", "1.3", "TLS `version`: 1.2, 1.3, or any (1.2 or 1.3, server's choice)")
	fs.StringVar(&c.curves, "curves", "X25519,P256", "key exchange groups offered, in order of preference: X25519, P256, P384, X25519MLKEM768 (Go's default puts the post-quantum hybrid first; most gateways' TLS stacks do not offer it yet)")
	fs.StringVar(&c.src, "src", "127.0.0.1", "source `address`es: one IP, or a range like 127.0.0.1-127.0.0.32 used in turn (more local ports for many connections)")
	fs.StringVar(&c.domain, "domain", "", "host part of Request-URIs (default: the target host:port)")
	fs.StringVar(&c.pids, "pids", "", "comma-separated `PIDs` of the server under test (descendants included): report its CPU and memory from /proc")
	fs.StringVar(&c.otherPIDs, "other-pids", "", "comma-separated `PIDs` of other processes of the setup (e.g. the backend): their CPU is reported apart from the rest of the machine's")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 5*time.Second, "bound on connect + TLS handshake")
	fs.BoolVar(&c.quiet, "quiet", false, "print only the JSON line")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write umload's own CPU profile to `file` (to check that the load generator is not the bottleneck)")
	fs.BoolVar(&c.trace, "trace", false, "print every SIP message sent and received to stderr (for small runs)")
}

// setup validates the flags and builds what they describe.
func (c *clientFlags) setup() (*tls.Config, error) {
	if _, _, err := net.SplitHostPort(c.target); err != nil {
		return nil, fmt.Errorf("-target: %w", err)
	}
	var err error
	if c.sources, err = parseSources(c.src); err != nil {
		return nil, err
	}
	if c.procs, err = parsePIDs(c.pids); err != nil {
		return nil, err
	}
	if c.others, err = parsePIDs(c.otherPIDs); err != nil {
		return nil, fmt.Errorf("-other%w", err)
	}
	if c.domain == "" {
		c.domain = c.target
	}
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return nil, fmt.Errorf("-cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("-cpuprofile: %w", err)
		}
	}
	return c.tlsConfig()
}

func (c *clientFlags) tlsConfig() (*tls.Config, error) {
	host, _, _ := net.SplitHostPort(c.target)
	cfg := &tls.Config{ServerName: c.serverName, InsecureSkipVerify: c.insecure}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	switch c.tlsVersion {
	case "1.2":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	case "1.3":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	case "any":
		cfg.MinVersion = tls.VersionTLS12
	default:
		return nil, fmt.Errorf("-tls: %q is not 1.2, 1.3 or any", c.tlsVersion)
	}
	for _, name := range strings.Split(c.curves, ",") {
		id, ok := curveIDs[strings.TrimSpace(name)]
		if !ok {
			return nil, fmt.Errorf("-curves: unknown group %q", name)
		}
		cfg.CurvePreferences = append(cfg.CurvePreferences, id)
	}
	if (c.cert == "") != (c.key == "") {
		return nil, errors.New("-cert and -key go together")
	}
	if c.cert != "" {
		kp, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, fmt.Errorf("-cert/-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	if c.ca != "" {
		pem, err := os.ReadFile(c.ca)
		if err != nil {
			return nil, fmt.Errorf("-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca %s: no PEM certificate", c.ca)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

var curveIDs = map[string]tls.CurveID{
	"X25519": tls.X25519, "P256": tls.CurveP256, "P384": tls.CurveP384, "P521": tls.CurveP521,
	"X25519MLKEM768": tls.X25519MLKEM768,
}

// stopProfile ends -cpuprofile, if any.
func (c *clientFlags) stopProfile() {
	if c.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
}

// parseSources reads "IP" or "IP-IP" (same /24 or wider, at most 4096
// addresses).
func parseSources(s string) ([]netip.Addr, error) {
	from, to, isRange := strings.Cut(s, "-")
	a, err := netip.ParseAddr(strings.TrimSpace(from))
	if err != nil {
		return nil, fmt.Errorf("-src: %w", err)
	}
	if !isRange {
		return []netip.Addr{a}, nil
	}
	b, err := netip.ParseAddr(strings.TrimSpace(to))
	if err != nil {
		return nil, fmt.Errorf("-src: %w", err)
	}
	var out []netip.Addr
	for x := a; x.Compare(b) <= 0; x = x.Next() {
		if len(out) == 4096 {
			return nil, errors.New("-src: more than 4096 addresses")
		}
		out = append(out, x)
	}
	if len(out) == 0 {
		return nil, errors.New("-src: empty range")
	}
	return out, nil
}

// dial opens a TCP connection from the next source address and completes
// the TLS handshake, both within the dial timeout.
func (c *clientFlags) dial(ctx context.Context, cfg *tls.Config) (*tls.Conn, error) {
	src := c.sources[c.nextSrc.Add(1)%uint64(len(c.sources))]
	d := net.Dialer{Timeout: c.dialTimeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	ctx, cancel := context.WithTimeout(ctx, c.dialTimeout)
	defer cancel()
	raw, err := d.DialContext(ctx, "tcp", c.target)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// errReason turns a network or TLS error into a short, stable failure
// reason for reports.
func errReason(prefix string, err error) string {
	var ne net.Error
	var alert tls.AlertError
	var cve *tls.CertificateVerificationError
	var re *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return prefix + "_timeout"
	case errors.As(err, &cve):
		return prefix + "_server_cert"
	case errors.As(err, &alert):
		return prefix + "_alert_" + strings.ReplaceAll(alert.Error(), " ", "_")
	case strings.Contains(err.Error(), "remote error"):
		s := err.Error()
		return prefix + "_" + strings.ReplaceAll(s[strings.Index(s, "remote error"):], " ", "_")
	case errors.Is(err, net.ErrClosed), strings.Contains(err.Error(), "EOF"):
		return prefix + "_closed"
	case strings.Contains(err.Error(), "connection reset"):
		return prefix + "_reset"
	case strings.Contains(err.Error(), "connection refused"):
		return prefix + "_refused"
	case strings.Contains(err.Error(), "address not available"), strings.Contains(err.Error(), "address already in use"):
		return prefix + "_no_local_port"
	case errors.As(err, &re):
		return prefix + "_" + re.Op
	}
	return prefix + "_error"
}
