package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/umrouter/umrouter/dialplan"
	"github.com/umrouter/umrouter/internal/testpki"
	"github.com/umrouter/umrouter/metrics"
	"github.com/umrouter/umrouter/tlsmgr"
)

// testPKI is a CA, umrouter's server certificate and a gateway certificate.
type testPKI struct {
	ca      *testpki.CA
	dir     string
	caFile  string
	srvCert string
	srvKey  string
	gw      *testpki.Leaf
}

const gwName = "gw1.example.test"

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "umrouter test CA")
	srv := ca.Issue(t, testpki.LeafOptions{CN: "umrouter", DNS: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	certPath, keyPath := srv.WriteFiles(t, dir, "server")
	return &testPKI{
		ca: ca, dir: dir, caFile: ca.WriteCAFile(t, dir), srvCert: certPath, srvKey: keyPath,
		gw: ca.Issue(t, testpki.LeafOptions{CN: gwName, DNS: []string{gwName}}),
	}
}

// testProxy is a running Server on loopback.
type testProxy struct {
	s       *Server
	certs   *tlsmgr.Manager
	m       *metrics.Metrics
	pki     *testPKI
	tlsAddr string
}

// noProbes keeps health probes out of tests that are not about them: each
// probe would be one more "call" in the SIPp backend's statistics.
var noProbes = false

// baseConfig is one gateway on the "main" plan and backends at addrs over udp.
func baseConfig(backends ...string) (Config, dialplan.Plans) {
	cfg := Config{
		NodeName:    "test-node",
		Advertise:   "127.0.0.1",
		StartupMode: "tls",
		Listen:      ListenConfig{TLS: "127.0.0.1:0", TCP: "127.0.0.1:0"},
		Gateways:    []Gateway{{Name: "gw1", Address: gwName, DialPlan: "main"}},
		Backends:    BackendsConfig{Transport: "udp", Health: HealthConfig{Probe: &noProbes}},
	}
	for _, b := range backends {
		cfg.Backends.Servers = append(cfg.Backends.Servers, Backend{Address: b})
	}
	return cfg, dialplan.Plans{{Name: "main", Security: dialplan.SIPSecured, URIType: dialplan.TelephoneExtension, NumberOfDigits: 5}}
}

func startProxy(t testing.TB, pki *testPKI, cfg Config, plans dialplan.Plans) *testProxy {
	t.Helper()
	cfg.SetDefaults()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	certs, err := tlsmgr.Open(tlsmgr.Config{CertFile: pki.srvCert, KeyFile: pki.srvKey, ClientCAFile: pki.caFile}, log)
	if err != nil {
		t.Fatalf("tlsmgr.Open: %v", err)
	}
	m := metrics.New()
	s, err := New(cfg, plans, certs, m, log)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ready) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("proxy did not become ready")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("proxy did not stop")
		}
	})
	return &testProxy{s: s, certs: certs, m: m, pki: pki, tlsAddr: fmt.Sprintf("127.0.0.1:%d", s.tlsPort.Load())}
}

// sipClient is a gateway (or backend) speaking SIP over one stream connection.
type sipClient struct {
	t    testing.TB
	conn net.Conn
	fr   frameReader
	msgs chan sip.Message
	errs chan error
	seq  atomic.Uint64
	name string
	// via is the transport token written in our Via headers.
	via string
}

// dialGateway opens a mutual TLS connection presenting cert (nil: none).
func dialGateway(t testing.TB, addr string, pki *testPKI, cert *tls.Certificate, tweak func(*tls.Config)) (*sipClient, error) {
	t.Helper()
	roots := pki.ca.Cert
	cfg := &tls.Config{ServerName: "localhost", RootCAs: poolOf(roots)}
	if cert != nil {
		// Always present it, as gateways do: Go's client would otherwise
		// withhold a certificate that does not chain to the server's CA list.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	if tweak != nil {
		tweak(cfg)
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	tc, err := tls.DialWithDialer(&d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	// TLS 1.3 reports a refused client certificate only at the first read.
	return newSIPClient(t, tc), nil
}

func newSIPClient(t testing.TB, c net.Conn) *sipClient {
	return startSIPClient(t, c, "TLS", nil)
}

// startSIPClient reads c with next (nil: stream framing) into the message channel.
func startSIPClient(t testing.TB, c net.Conn, via string, next func() ([]byte, error)) *sipClient {
	sc := &sipClient{t: t, conn: c, msgs: make(chan sip.Message, 64), errs: make(chan error, 1), name: "gw", via: via}
	if next == nil {
		sc.fr = frameReader{r: bufio.NewReader(c), maxBytes: 1 << 20}
		next = sc.fr.next
	}
	go func() {
		for {
			b, err := next()
			if err != nil {
				sc.errs <- err
				close(sc.msgs)
				return
			}
			m, err := sip.ParseMessage(append([]byte(nil), b...))
			if err != nil {
				sc.errs <- err
				close(sc.msgs)
				return
			}
			sc.msgs <- m
		}
	}()
	t.Cleanup(func() { c.Close() })
	return sc
}

func (c *sipClient) send(msg string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(msg)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next returns the next message, failing the test after timeout.
func (c *sipClient) next(timeout time.Duration) sip.Message {
	c.t.Helper()
	select {
	case m, ok := <-c.msgs:
		if !ok {
			c.t.Fatalf("connection ended: %v", <-c.errs)
		}
		return m
	case <-time.After(timeout):
		c.t.Fatalf("no message within %s", timeout)
	}
	return nil
}

// response waits for the next response, skipping nothing.
func (c *sipClient) response(timeout time.Duration) *sip.Response {
	c.t.Helper()
	m := c.next(timeout)
	r, ok := m.(*sip.Response)
	if !ok {
		c.t.Fatalf("want a response, got %s", m.(*sip.Request).StartLine())
	}
	return r
}

// responseTo waits for the next response to method, skipping others: a
// UAC sees the 2xx of its INVITE again when the backend retransmits it
// before the ACK arrived (RFC 3261 §13.3.1.4), and ignores it.
func (c *sipClient) responseTo(method string, timeout time.Duration) *sip.Response {
	c.t.Helper()
	for {
		r := c.response(timeout)
		if string(r.CSeq().MethodName) == method {
			return r
		}
	}
}

// finalResponse skips provisional responses.
func (c *sipClient) finalResponse(timeout time.Duration) *sip.Response {
	c.t.Helper()
	for {
		r := c.response(timeout)
		if r.StatusCode >= 200 {
			return r
		}
	}
}

// closed waits for the server to close the connection.
func (c *sipClient) closed(timeout time.Duration) error {
	select {
	case _, ok := <-c.msgs:
		if ok {
			return fmt.Errorf("got a message, want close")
		}
		return <-c.errs
	case <-time.After(timeout):
		return fmt.Errorf("still open after %s", timeout)
	}
}

// dialogRequest is what a UAC needs to send in-dialog requests.
type dialog struct {
	callID, fromTag, toTag string
	target                 string   // remote Contact
	routes                 []string // route set, as written in Route headers
	cseq                   int
}

const testSDP = "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

func (c *sipClient) localAddr() string { return c.conn.LocalAddr().String() }

// invite builds an INVITE to the pilot number with a plain RTP offer; it
// returns the text and the call's identifiers.
func (c *sipClient) invite(user string, extra ...string) (string, *dialog) {
	return c.inviteSDP(user, testSDP, extra...)
}

// inviteSDP builds an INVITE offering sdp (none when empty: a late offer).
func (c *sipClient) inviteSDP(user, sdp string, extra ...string) (string, *dialog) {
	n := c.seq.Add(1)
	d := &dialog{callID: fmt.Sprintf("call-%d-%d@%s", n, time.Now().UnixNano(), c.name), fromTag: fmt.Sprintf("ft%d", n), cseq: 1}
	hdrs := strings.Join(append([]string{}, extra...), "")
	ctype := ""
	if sdp != "" {
		ctype = "Content-Type: application/sdp\r\n"
	}
	msg := fmt.Sprintf("INVITE sip:%s@127.0.0.1 SIP/2.0\r\n"+
		"Via: SIP/2.0/%s %s;branch=z9hG4bK-inv-%s\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:caller@%s>;tag=%s\r\n"+
		"To: <sip:%s@127.0.0.1>\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: 1 INVITE\r\n"+
		"Contact: <sip:caller@%s;transport=tls>\r\n"+
		"%s"+
		"%s"+
		"Content-Length: %d\r\n\r\n%s",
		user, c.via, c.localAddr(), d.callID, gwName, d.fromTag, user, d.callID, c.localAddr(), hdrs, ctype, len(sdp), sdp)
	return msg, d
}

// establish records the dialog from a 2xx to the INVITE.
func (d *dialog) establish(r *sip.Response) {
	d.toTag, _ = r.To().Params.Get("tag")
	if ct := r.Contact(); ct != nil {
		d.target = ct.Address.String()
	}
	rrs := r.GetHeaders("Record-Route")
	d.routes = nil
	for i := len(rrs) - 1; i >= 0; i-- { // the UAC reverses the Record-Route list
		d.routes = append(d.routes, rrs[i].Value())
	}
}

// inDialog builds an in-dialog request (ACK uses the INVITE's CSeq number).
func (c *sipClient) inDialog(d *dialog, method string) string {
	seq := d.cseq
	if method != "ACK" {
		d.cseq++
		seq = d.cseq
	}
	var routes strings.Builder
	for _, r := range d.routes {
		routes.WriteString("Route: " + r + "\r\n")
	}
	return fmt.Sprintf("%s %s SIP/2.0\r\n"+
		"Via: SIP/2.0/%s %s;branch=z9hG4bK-%s-%d-%s\r\n"+
		"Max-Forwards: 70\r\n"+
		"%s"+
		"From: <sip:caller@%s>;tag=%s\r\n"+
		"To: <sip:pilot@127.0.0.1>;tag=%s\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: %d %s\r\n"+
		"Content-Length: 0\r\n\r\n",
		method, d.target, c.via, c.localAddr(), strings.ToLower(method), seq, d.callID, routes.String(), gwName, d.fromTag, d.toTag, d.callID, seq, method)
}

func poolOf(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

// callsInParallel opens conns gateway connections to p and runs call
// perConn times on each, the connections concurrently, and returns the
// first error of each connection that had one.
func callsInParallel(t testing.TB, p *testProxy, conns, perConn int, call func(*sipClient) error) []error {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		c, err := dialGateway(t, p.tlsAddr, p.pki, &p.pki.gw.TLS, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		c.name = fmt.Sprintf("conn-%d", i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perConn; j++ {
				if err := call(c); err != nil {
					errs <- fmt.Errorf("call %d on %s: %w", j, c.name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	var out []error
	for err := range errs {
		out = append(out, err)
	}
	return out
}

// gateway connects as gw1, presenting its certificate, failing the test if
// the connection cannot be made.
func (p *testProxy) gateway(t testing.TB) *sipClient {
	t.Helper()
	c, err := dialGateway(t, p.tlsAddr, p.pki, &p.pki.gw.TLS, nil)
	if err != nil {
		t.Fatalf("dial as gw1: %v", err)
	}
	return c
}
