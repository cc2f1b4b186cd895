package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/dtls/v3"
	"go.uber.org/zap"

	"github.com/umrouter/umrouter/dialplan"
	"github.com/umrouter/umrouter/metrics"
	"github.com/umrouter/umrouter/tlsmgr"
)

// Certificates is what the proxy needs from the certificate manager
// (tlsmgr.Manager): TLS configurations that always use the current material,
// so that a reload applies to the next handshake without touching listeners.
type Certificates interface {
	// ServerConfig is the mutual-TLS configuration for gateway-facing listeners.
	ServerConfig() *tls.Config
	// ClientConfig is the configuration for dialing serverName (a backend or a
	// gateway), presenting our certificate as client certificate.
	ClientConfig(serverName string) *tls.Config
	// SelfSigned reports whether our active certificate is self-signed.
	SelfSigned() bool
}

// Server is a SIP proxy. Create it with New, start it with Run.
type Server struct {
	cfg    Config
	plans  dialplan.Plans
	certs  Certificates
	m      *metrics.Metrics
	log    *zap.Logger
	parser *sip.Parser

	routing atomic.Pointer[routing]
	applyMu sync.Mutex // serialises Apply

	// branchPrefix makes our Via branches unique to this process, so that a
	// response is recognised as ours by its branch alone.
	branchPrefix string
	branchSeq    atomic.Uint64
	connSeq      atomic.Uint64

	ctx   context.Context
	wg    sync.WaitGroup
	ready atomic.Bool
	// drain is notDraining, drainingForAdmin (Drain, undone by Undrain) or
	// drainingToStop (the shutdown's, which nothing undoes).
	drain atomic.Int32

	udp      *net.UDPConn // backend-side (and optional gateway-side) UDP socket
	tlsPort  atomic.Int32 // our TLS port, written in gateway-facing Record-Route
	tcpPort  atomic.Int32
	dtlsPort atomic.Int32

	dtlsListener net.Listener
	serverTLS    *tls.Config

	connMu    sync.Mutex
	conns     map[uint64]*streamConn
	connCount atomic.Int64

	listenMu  sync.Mutex
	listeners map[string]*boundListener // by transport: "TLS", "TCP"

	txs       txTable
	dialogs   dialogTable
	admission admission
	held      refusalHold
	rates     rateLimiter
	// handshakes keeps TLS handshakes from taking every CPU.
	handshakes *handshakeGate
}

// New checks cfg (SetDefaults must have been applied) and prepares a Server.
// It opens no socket: Run does.
func New(cfg Config, plans dialplan.Plans, certs Certificates, m *metrics.Metrics, log *zap.Logger) (*Server, error) {
	if err := cfg.Validate(plans).Err(); err != nil {
		return nil, err
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("random branch prefix: %w", err)
	}
	s := &Server{
		cfg:          cfg,
		certs:        certs,
		m:            m,
		log:          log,
		parser:       sip.NewParser(),
		branchPrefix: "z9hG4bKumr" + hex.EncodeToString(rnd[:]) + ".",
		conns:        map[uint64]*streamConn{},
		listeners:    map[string]*boundListener{},
		handshakes:   newHandshakeGate(0),
	}
	s.parser.MaxMessageLength = cfg.Limits.MaxMessageBytes
	// One server configuration for every connection: its session ticket
	// keys are what lets a returning gateway resume its session. It reads
	// the certificate manager's current material at each handshake.
	s.serverTLS = certs.ServerConfig()
	s.routing.Store(s.buildRouting(nil, cfg, plans, nil))
	s.txs.init()
	s.dialogs.init()
	s.admission.perIP = map[netip.Addr]int{}
	return s, nil
}

// Run binds the listeners and serves until ctx is cancelled; it then stops
// accepting, lets in-flight transactions finish (up to the drain timeout) and
// returns nil. It returns an error at once if a listener cannot be bound.
// ready, when not nil, is closed once every listener is bound.
func (s *Server) Run(ctx context.Context, ready chan<- struct{}) error {
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.ctx = runCtx
	first := s.rt()
	if first.startupMode != "tls" || s.cfg.Listen.UDP != "" {
		s.resolveGateways(ctx, first)
	}
	closeAll := func() { s.closeListeners() }
	if err := s.setListeners(first); err != nil {
		return err
	}
	udpAddr := s.cfg.Listen.UDP
	if udpAddr == "" {
		udpAddr = ":0" // backend side only; the port is written in our Via
	}
	ua, err := net.ResolveUDPAddr("udp", udpAddr)
	if err == nil {
		s.udp, err = net.ListenUDP("udp", ua)
	}
	if err != nil {
		closeAll()
		return fmt.Errorf("listen udp %s: %w", udpAddr, err)
	}
	if s.cfg.Listen.DTLS != "" {
		if err := s.listenDTLS(s.cfg.Listen.DTLS); err != nil {
			closeAll()
			_ = s.udp.Close()
			return err
		}
	}
	_ = s.udp.SetReadBuffer(4 << 20)
	_ = s.udp.SetWriteBuffer(4 << 20)
	s.wg.Add(1)
	go s.udpLoop()
	s.wg.Add(1)
	go s.txs.sweep(runCtx, &s.wg, s.expireTx)
	s.wg.Add(1)
	go s.held.run(runCtx, &s.wg)
	s.wg.Add(1)
	go s.probeBackends()

	s.ready.Store(true)
	s.log.Info("umrouter serving",
		zap.String("startup_mode", first.startupMode),
		zap.String("tls", s.cfg.Listen.TLS), zap.String("tcp", s.cfg.Listen.TCP),
		zap.String("udp", s.udp.LocalAddr().String()),
		zap.Int("gateways", len(s.rt().gateways)), zap.Int("backends", len(s.rt().backends.Servers)))
	if first.backends.AllowPlaintext && first.backends.Transport != "tls" {
		s.log.Warn("backends.allow_plaintext is set: calls of SIP Secured and Secured dial plans may leave toward the backends without TLS",
			zap.String("transport", first.backends.Transport))
	}
	if s.certs.SelfSigned() {
		s.log.Warn("serving with a self-signed certificate: Lync peers are refused, and gateways must trust it explicitly (umrouter cert export)")
	}
	if ready != nil {
		close(ready)
	}

	<-ctx.Done()
	s.ready.Store(false)
	s.drain.Store(drainingToStop)
	closeAll()
	if s.dtlsListener != nil {
		_ = s.dtlsListener.Close()
	}
	s.log.Info("stopping: draining in-flight transactions", zap.Int("transactions", s.txs.len()))
	s.waitDrained(s.cfg.Limits.DrainTimeout)
	cancel()
	_ = s.udp.Close()
	s.connMu.Lock()
	for _, c := range s.conns {
		c.close()
	}
	s.connMu.Unlock()
	s.wg.Wait()
	s.log.Info("stopped")
	return nil
}

// waitDrained waits until no transaction is in flight, or timeout.
func (s *Server) waitDrained(timeout time.Duration) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for s.txs.len() > 0 {
		select {
		case <-deadline.C:
			s.log.Warn("drain timeout: closing with transactions in flight", zap.Int("transactions", s.txs.len()))
			return
		case <-tick.C:
		}
	}
}

// Ready reports whether the listeners are up and at least one backend is usable.
func (s *Server) Ready() bool { return s.ReadyError() == nil }

// ReadyError says why the server is not ready, or nil.
func (s *Server) ReadyError() error {
	switch {
	case !s.ready.Load():
		return errors.New("listeners not up")
	case s.draining():
		return errors.New("draining")
	case !s.rt().pool.anyUp():
		return errors.New("no backend server is up")
	}
	return nil
}

// acceptLoop accepts connections until the listener is closed. A transient
// Accept error (EMFILE, ECONNABORTED) is retried with back-off instead of
// ending the listener, unlike sipgo v1.7.3.
func (s *Server) acceptLoop(l net.Listener, tp string) {
	defer s.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		nc, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("accept failed, retrying", zap.String("transport", tp), zap.Error(err), zap.Duration("backoff", backoff))
			time.Sleep(backoff)
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		remote := addrPortOf(nc.RemoteAddr())
		if reason := s.admit(remote.Addr(), tp); reason != "" {
			s.m.Handshakes.WithLabelValues("refused", reason).Inc()
			// Stringer: formatted only when debug logging is on (a flood's path).
			s.log.Debug("connection refused at accept", zap.Stringer("remote", remote), zap.String("reason", reason))
			if !s.held.hold(nc, time.Now()) {
				_ = nc.Close()
			}
			continue
		}
		s.wg.Add(1)
		go s.serveConn(nc, tp)
	}
}

// serveConn finishes the handshake (TLS) with a timeout, identifies the peer
// and reads the connection until it ends.
func (s *Server) serveConn(nc net.Conn, tp string) {
	defer s.wg.Done()
	c := s.openConn(nc, tp)
	if c == nil {
		s.release(addrPortOf(nc.RemoteAddr()).Addr())
		return
	}
	// The connection is read on a goroutine of its own, not this one: the
	// handshake (crypto, certificate parsing and checks) grew this
	// goroutine's stack to tens of KiB, which an idle connection would keep
	// until a garbage collection shrinks it; a new goroutine starts small.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.release(c.remote.Addr())
		s.addConn(c)
		if tp == "DTLS" {
			s.readDatagrams(c)
			return
		}
		s.readLoop(c)
	}()
}

// openConn finishes the handshake (TLS, DTLS) with a timeout and identifies
// the peer; nil, with nc closed and the refusal counted, when the
// handshake fails.
func (s *Server) openConn(nc net.Conn, tp string) *streamConn {
	c := &streamConn{id: s.connSeq.Add(1), conn: nc, tp: tp, remote: addrPortOf(nc.RemoteAddr())}
	handshaking := tp != "TCP"
	handshakeDone := func() { // releases the handshake slot admit took, once
		if handshaking {
			handshaking = false
			s.releaseHandshake()
		}
	}
	defer handshakeDone()
	if tp == "DTLS" {
		err := s.handshakeDTLS(c, nc.(*dtls.Conn))
		handshakeDone()
		if err != nil {
			reason := tlsmgr.HandshakeFailureReason(err)
			s.m.Handshakes.WithLabelValues("refused", reason).Inc()
			s.log.Info("DTLS handshake refused", zap.String("remote", c.remote.String()), zap.String("reason", reason), zap.Error(err))
			_ = nc.Close()
			return nil
		}
		c.peerGen = s.rt().gen
		p := s.identify(c)
		c.who.Store(&p)
		result := "ok"
		if p.refusal != "" {
			result = "unauthorized"
		}
		s.m.Handshakes.WithLabelValues("ok", result).Inc()
	} else if tp == "TLS" {
		hctx, cancel := context.WithTimeout(s.ctx, s.cfg.Limits.HandshakeTimeout)
		gc := s.handshakes.wrap(hctx, nc)
		tc := tls.Server(gc, s.serverTLS)
		err := tc.HandshakeContext(hctx)
		gc.finish()
		timedOut := errors.Is(hctx.Err(), context.DeadlineExceeded)
		cancel()
		handshakeDone()
		if err != nil {
			reason := tlsmgr.HandshakeFailureReason(err)
			if timedOut {
				reason = tlsmgr.ReasonTimeout
			}
			s.m.Handshakes.WithLabelValues("refused", reason).Inc()
			s.log.Info("TLS handshake refused", zap.String("remote", c.remote.String()), zap.String("reason", reason), zap.Error(err))
			_ = nc.Close()
			return nil
		}
		c.conn = tc
		c.peerGen = s.rt().gen
		p := s.identify(c)
		c.who.Store(&p)
		result := "ok"
		if p.refusal != "" {
			result = "unauthorized"
		}
		s.m.Handshakes.WithLabelValues("ok", result).Inc()
	} else {
		c.peerGen = s.rt().gen
		p := s.identify(c)
		c.who.Store(&p)
	}
	if p := c.identity(); p.refusal != "" {
		s.log.Warn("peer refused: every request will get 403", append(connFields(c), zap.String("reason", p.refusal), zap.Strings("names", p.names))...)
	} else {
		s.log.Info("peer connected", connFields(c)...)
	}
	return c
}

// identify decides who is at the other end of an accepted connection.
func (s *Server) identify(c *streamConn) peer {
	if dc, ok := c.conn.(*dtls.Conn); ok {
		st, _ := dc.ConnectionState()
		certs, err := tlsmgr.DTLSPeerCertificates(st)
		if err != nil {
			return peer{refusal: "no_certificate"}
		}
		return s.identifyTLS(certs)
	}
	if st := c.tlsState(); st != nil {
		return s.identifyTLS(st.PeerCertificates)
	}
	return s.identifyByAddr(c.remote)
}

// identifyTLS applies RFC 5922 to the verified peer certificate and maps the
// identity to a configured gateway (or backend server).
func (s *Server) identifyTLS(chain []*x509.Certificate) peer {
	if len(chain) == 0 {
		return peer{refusal: "no_certificate"}
	}
	names := tlsmgr.PeerIdentities(chain[0])
	for _, n := range names {
		if g, ok := s.rt().byAddr[n]; ok {
			if g.Kind == "lync" {
				if tlsmgr.IsSelfSigned(chain[0]) {
					return peer{gateway: g, names: names, refusal: "lync_peer_self_signed"}
				}
				if s.certs.SelfSigned() {
					return peer{gateway: g, names: names, refusal: "own_certificate_self_signed"}
				}
			}
			return peer{side: sideGateway, gateway: g, names: names}
		}
	}
	for _, n := range names {
		if addr, ok := s.rt().pool.byHost(n); ok {
			return peer{side: sideBackend, backend: addr, names: names}
		}
	}
	return peer{names: names, refusal: "not_a_gateway"}
}

// identifyByAddr identifies a plain TCP or UDP peer by its source address:
// a backend server at exactly that address and port first (UDP peers send
// from their listening port), then a gateway at that IP, then a backend at
// that IP.
func (s *Server) identifyByAddr(ap netip.AddrPort) peer {
	// Runs for every datagram: names (only logged for refused peers) and
	// address strings are made only when needed.
	ip := ap.Addr().Unmap()
	if b := s.rt().pool.byResolved(ip, int(ap.Port())); b != nil {
		return peer{side: sideBackend, backend: b.addr}
	}
	if b := s.rt().pool.byTarget(ip.String(), int(ap.Port())); b != nil {
		return peer{side: sideBackend, backend: b.addr}
	}
	if g, ok := s.rt().byIP[ip]; ok {
		return peer{side: sideGateway, gateway: g}
	}
	if addr, ok := s.rt().pool.byIP(ip); ok {
		return peer{side: sideBackend, backend: addr}
	}
	return peer{names: []string{ip.String()}, refusal: "not_a_gateway"}
}

func (s *Server) addConn(c *streamConn) {
	s.connMu.Lock()
	s.conns[c.id] = c
	s.connMu.Unlock()
	s.connCount.Add(1)
	c.metricSide = c.identity().side
	s.m.Connections.WithLabelValues(lower(c.tp), c.metricSide.String()).Inc()
}

func (s *Server) dropConn(c *streamConn) {
	c.close()
	s.connMu.Lock()
	_, ok := s.conns[c.id]
	delete(s.conns, c.id)
	s.connMu.Unlock()
	if ok {
		s.connCount.Add(-1)
		s.m.Connections.WithLabelValues(lower(c.tp), c.metricSide.String()).Dec()
	}
	s.rt().pool.forget(c)
	s.abandon(c)
}

// abandon ends the transactions whose sender was on a connection that just
// closed: nobody is left to answer, so an INVITE still ringing is cancelled
// toward the next hop, and nothing of them stays in memory.
func (s *Server) abandon(c *streamConn) {
	for _, tx := range s.txs.from(c) {
		tx.mu.Lock()
		live := tx.state == txCalling || tx.state == txProceeding
		if live && tx.method == sip.INVITE && tx.via != "" {
			// Cancel it and stay to acknowledge the 487 (or whatever final
			// comes), relaying nothing: the transaction ends with it.
			tx.in = nil
			if !tx.cancelled {
				tx.cancelled = true
				if tx.state == txProceeding {
					s.sendCancel(tx)
				}
			}
			s.log.Info("sender gone: call cancelled toward the next hop", zap.String("call_id", tx.callID))
		} else {
			if live {
				s.log.Info("sender gone: transaction abandoned", zap.String("call_id", tx.callID), zap.String("method", string(tx.method)))
			}
			s.uncount(tx)
			tx.state = txTerminated
			s.txs.remove(tx)
		}
		tx.mu.Unlock()
	}
}

// connByID returns a live stream connection.
func (s *Server) connByID(id uint64) *streamConn {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	c := s.conns[id]
	if c == nil || c.closed.Load() {
		return nil
	}
	return c
}

// gatewayConn returns a live connection of gateway g, or dials one (TLS to
// address:port, verifying that its certificate names the address).
func (s *Server) gatewayConn(g *Gateway) (flow, error) {
	s.connMu.Lock()
	for _, c := range s.conns {
		if p := c.identity(); p.gateway != nil && p.gateway.Name == g.Name && p.refusal == "" && !c.closed.Load() {
			s.connMu.Unlock()
			return c, nil
		}
	}
	s.connMu.Unlock()
	addr := net.JoinHostPort(g.Address, strconv.Itoa(g.Port))
	c, err := s.dial("TLS", addr, g.Address, peer{side: sideGateway, gateway: g, names: []string{g.Address}})
	if err != nil {
		return nil, err // not c: a nil *streamConn in a flow is not a nil flow
	}
	return c, nil
}

// dial opens a stream connection and starts its read loop.
func (s *Server) dial(tp, addr, serverName string, p peer) (*streamConn, error) {
	d := net.Dialer{Timeout: s.rt().backends.Health.Timeout}
	nc, err := d.DialContext(s.ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", tp, addr, err)
	}
	if tp == "TLS" {
		tc := tls.Client(nc, s.certs.ClientConfig(serverName))
		hctx, cancel := context.WithTimeout(s.ctx, s.cfg.Limits.HandshakeTimeout)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		nc = tc
	}
	c := &streamConn{id: s.connSeq.Add(1), conn: nc, tp: tp, remote: addrPortOf(nc.RemoteAddr()), dialed: true}
	c.who.Store(&p)
	s.addConn(c)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.readLoop(c)
	}()
	return c, nil
}

// udpLoop reads the UDP socket; each datagram is one message, handled in
// arrival order on this goroutine.
func (s *Server) udpLoop() {
	defer s.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, addr, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n <= 4 {
			continue // keep-alive
		}
		f := udpFlow{pc: s.udp, addr: addr}
		s.handleDatagram(f, buf[:n])
	}
}

// lower lower-cases a token; the transport names, on every message's
// metrics and policy path, without allocating.
func lower(s string) string {
	switch s {
	case "TLS":
		return "tls"
	case "TCP":
		return "tcp"
	case "UDP":
		return "udp"
	case "DTLS":
		return "dtls"
	}
	return strings.ToLower(s)
}

func connFields(c *streamConn) []zap.Field {
	p := c.identity()
	f := []zap.Field{zap.Uint64("conn", c.id), zap.String("transport", lower(c.tp)), zap.String("remote", c.remote.String()), zap.String("side", p.side.String())}
	if p.gateway != nil {
		f = append(f, zap.String("gateway", p.gateway.Name))
	}
	if p.backend != "" {
		f = append(f, zap.String("backend", p.backend))
	}
	return f
}

func errField(err error) zap.Field { return zap.Error(err) }
