package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/umrouter/umrouter/internal/testpki"
)

// This file holds what the operations tests need to carry real calls: a
// test PKI, a gateway speaking SIP over mutual TLS, a backend UAS whose
// answer the test releases, and the umrouter binary built once.

// opsPKI is a CA, umrouter's certificate, a gateway's and a stranger's
// (same CA, naming no configured gateway).
type opsPKI struct {
	ca                *testpki.CA
	dir               string
	caFile            string
	srvCert, srvKey   string
	gw, stranger, ops *testpki.Leaf
}

const gwName = "gw1.example.test"

func newOpsPKI(t *testing.T) *opsPKI {
	t.Helper()
	p := &opsPKI{ca: testpki.NewCA(t, "umrouter ops test CA"), dir: t.TempDir()}
	srv := p.ca.Issue(t, testpki.LeafOptions{CN: "umrouter.example.test", DNS: []string{"umrouter.example.test", "localhost"},
		IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	p.srvCert, p.srvKey = srv.WriteFiles(t, p.dir, "umrouter")
	p.caFile = p.ca.WriteCAFile(t, p.dir)
	p.gw = p.ca.Issue(t, testpki.LeafOptions{CN: gwName, DNS: []string{gwName}})
	p.stranger = p.ca.Issue(t, testpki.LeafOptions{CN: "stranger.example.test", DNS: []string{"stranger.example.test"}})
	p.ops = p.ca.Issue(t, testpki.LeafOptions{CN: "operator", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return p
}

// opsConfig is a configuration with one gateway (gw1, plan main,
// sip-secured) and the given backends over UDP, the admin API on
// adminListen with extra admin keys, everything on loopback.
func (p *opsPKI) opsConfig(t *testing.T, sipAddr, adminListen, adminExtra string, backends ...string) string {
	t.Helper()
	var servers strings.Builder
	for _, b := range backends {
		fmt.Fprintf(&servers, "    - { address: %s }\n", b)
	}
	return fmt.Sprintf(`node_name: ops-test
advertise: 127.0.0.1
startup_mode: tls
listen:
  tls: %s
tls:
  cert_file: %s
  key_file: %s
  client_ca_file: %s
gateways:
  - name: gw1
    address: %s
    dial_plan: main
dial_plans:
  - name: main
    security: sip-secured
backends:
  transport: udp
  health: { probe: false }
  servers:
%sadmin:
  listen: %s
%slog:
  level: debug
  format: json
limits:
  drain_timeout: 20s
`, sipAddr, p.srvCert, p.srvKey, p.caFile, gwName, servers.String(), adminListen, adminExtra)
}

// gateway is a SIP peer over mutual TLS.
type gateway struct {
	t    *testing.T
	conn *tls.Conn
	r    *bufio.Reader
	n    int
}

func dialGateway(t *testing.T, addr string, p *opsPKI, leaf *testpki.Leaf) *gateway {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	cfg := &tls.Config{ServerName: "localhost", RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &leaf.TLS, nil }}
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(&d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &gateway{t: t, conn: c, r: bufio.NewReader(c)}
}

func (g *gateway) send(msg string) {
	g.t.Helper()
	_ = g.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(g.conn, msg); err != nil {
		g.t.Fatalf("gateway send: %v", err)
	}
}

// response reads the next response, failing the test after 10 s.
func (g *gateway) response() *sip.Response {
	g.t.Helper()
	_ = g.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	raw, err := readStreamMessage(g.r)
	if err != nil {
		g.t.Fatalf("gateway read: %v", err)
	}
	m, err := sip.ParseMessage(raw)
	if err != nil {
		g.t.Fatalf("gateway parse: %v\n%s", err, raw)
	}
	r, ok := m.(*sip.Response)
	if !ok {
		g.t.Fatalf("gateway: want a response, got %s", m.(*sip.Request).StartLine())
	}
	return r
}

// final reads responses to method until a final one.
func (g *gateway) final(method string) *sip.Response {
	g.t.Helper()
	for i := 0; i < 20; i++ {
		r := g.response()
		if r.StatusCode >= 200 && string(r.CSeq().MethodName) == method {
			return r
		}
	}
	g.t.Fatalf("no final response to %s within 20 messages", method)
	return nil
}

// readStreamMessage frames one SIP message on a stream (RFC 3261 §18.3):
// headers up to the empty line, then Content-Length bytes of body.
func readStreamMessage(r *bufio.Reader) ([]byte, error) {
	var buf bytes.Buffer
	length := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if buf.Len() == 0 && strings.TrimSpace(line) == "" {
			continue // keep-alive CRLF
		}
		buf.WriteString(line)
		if strings.TrimRight(line, "\r\n") == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "content-length", "l":
				length, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	buf.Write(body)
	return buf.Bytes(), nil
}

// call is a dialog as the gateway (UAC) sees it.
type call struct {
	callID, fromTag, toTag, target string
	routes                         []string
}

const testSDP = "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

// invite sends an INVITE to extension 12345 with a plain RTP offer.
func (g *gateway) invite() *call {
	g.n++
	c := &call{callID: fmt.Sprintf("ops-%d-%d@%s", g.n, time.Now().UnixNano(), gwName), fromTag: fmt.Sprintf("ft%d", g.n)}
	local := g.conn.LocalAddr().String()
	g.send(fmt.Sprintf("INVITE sip:12345@127.0.0.1 SIP/2.0\r\n"+
		"Via: SIP/2.0/TLS %s;branch=z9hG4bK-ops-inv-%d-%s\r\n"+
		"Max-Forwards: 70\r\n"+
		"From: <sip:5551234@%s>;tag=%s\r\n"+
		"To: <sip:12345@127.0.0.1>\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: 1 INVITE\r\n"+
		"Contact: <sip:5551234@%s;transport=tls>\r\n"+
		"Content-Type: application/sdp\r\n"+
		"Content-Length: %d\r\n\r\n%s",
		local, g.n, c.callID, gwName, c.fromTag, c.callID, local, len(testSDP), testSDP))
	return c
}

// established records the dialog from the 2xx of the INVITE.
func (c *call) established(r *sip.Response) {
	c.toTag, _ = r.To().Params.Get("tag")
	if ct := r.Contact(); ct != nil {
		c.target = ct.Address.String()
	}
	rrs := r.GetHeaders("Record-Route")
	c.routes = nil
	for i := len(rrs) - 1; i >= 0; i-- {
		c.routes = append(c.routes, rrs[i].Value())
	}
}

// inDialog sends ACK (cseq 1) or another request of the dialog.
func (g *gateway) inDialog(c *call, method string, cseq int) {
	var routes strings.Builder
	for _, r := range c.routes {
		routes.WriteString("Route: " + r + "\r\n")
	}
	local := g.conn.LocalAddr().String()
	g.send(fmt.Sprintf("%s %s SIP/2.0\r\n"+
		"Via: SIP/2.0/TLS %s;branch=z9hG4bK-ops-%s-%d-%s\r\n"+
		"Max-Forwards: 70\r\n"+
		"%s"+
		"From: <sip:5551234@%s>;tag=%s\r\n"+
		"To: <sip:12345@127.0.0.1>;tag=%s\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: %d %s\r\n"+
		"Content-Length: 0\r\n\r\n",
		method, c.target, local, strings.ToLower(method), cseq, c.callID, routes.String(), gwName, c.fromTag, c.toTag, c.callID, cseq, method))
}

// backendUAS is a UM server on UDP whose answers the test controls: it
// rings at once, answers 200 when the test says so, and reports every
// request it receives.
type backendUAS struct {
	t        *testing.T
	pc       net.PacketConn
	requests chan *sip.Request // every request but OPTIONS
	answer   chan struct{}     // one value per INVITE to answer
	stopped  chan struct{}
}

func startBackendUAS(t *testing.T) *backendUAS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backendUAS{t: t, pc: pc, requests: make(chan *sip.Request, 16), answer: make(chan struct{}, 16), stopped: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.serve(&wg)
	}()
	t.Cleanup(func() {
		close(b.stopped)
		pc.Close()
		wg.Wait()
	})
	return b
}

func (b *backendUAS) addr() string { return b.pc.LocalAddr().String() }

func (b *backendUAS) serve(wg *sync.WaitGroup) {
	buf := make([]byte, 65535)
	for {
		n, from, err := b.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			continue
		}
		req, ok := m.(*sip.Request)
		if !ok {
			continue
		}
		switch req.Method {
		case sip.OPTIONS:
			b.reply(from, req, 200, "OK", "", "")
			continue
		case sip.INVITE:
			b.reply(from, req, 180, "Ringing", "be-tag", "")
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-b.answer:
					b.reply(from, req, 200, "OK", "be-tag", testSDP)
				case <-b.stopped:
				}
			}()
		case sip.BYE:
			b.reply(from, req, 200, "OK", "", "")
		}
		select {
		case b.requests <- req:
		default:
		}
	}
}

// reply answers req as a UAS, copying what RFC 3261 §8.2.6 says to copy.
func (b *backendUAS) reply(to net.Addr, req *sip.Request, code int, reason, toTag, sdp string) {
	var h strings.Builder
	fmt.Fprintf(&h, "SIP/2.0 %d %s\r\n", code, reason)
	for _, v := range req.GetHeaders("Via") {
		h.WriteString("Via: " + v.Value() + "\r\n")
	}
	if code > 100 && code < 300 {
		for _, rr := range req.GetHeaders("Record-Route") {
			h.WriteString("Record-Route: " + rr.Value() + "\r\n")
		}
	}
	h.WriteString("From: " + req.From().Value() + "\r\n")
	toVal := req.To().Value()
	if toTag != "" && !strings.Contains(toVal, "tag=") {
		toVal += ";tag=" + toTag
	}
	h.WriteString("To: " + toVal + "\r\n")
	h.WriteString("Call-ID: " + req.CallID().Value() + "\r\n")
	h.WriteString("CSeq: " + req.CSeq().Value() + "\r\n")
	fmt.Fprintf(&h, "Contact: <sip:um@%s;transport=udp>\r\n", b.addr())
	if sdp != "" {
		h.WriteString("Content-Type: application/sdp\r\n")
	}
	fmt.Fprintf(&h, "Content-Length: %d\r\n\r\n%s", len(sdp), sdp)
	_, _ = b.pc.WriteTo([]byte(h.String()), to)
}

// next waits for the next request of method, skipping others.
func (b *backendUAS) next(method sip.RequestMethod) *sip.Request {
	b.t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case r := <-b.requests:
			if r.Method == method {
				return r
			}
		case <-deadline:
			b.t.Fatalf("backend: no %s within 15s", method)
			return nil
		}
	}
}

// The umrouter binary, built once for the tests that need a real process
// (signals, sd_notify, exit codes).
var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
	binaryDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binaryDir != "" {
		os.RemoveAll(binaryDir)
	}
	os.Exit(code)
}

// umrouterBinary builds ./cmd/umrouter (no race detector: the process is
// under test for its behaviour as shipped) and returns its path.
func umrouterBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	binaryOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			binaryErr = errors.New("no go tool to build the binary")
			return
		}
		if binaryDir, err = os.MkdirTemp("", "umrouter-bin-"); err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(binaryDir, "umrouter")
		out, err := exec.Command(goTool, "build", "-o", binaryPath, ".").CombinedOutput()
		if err != nil {
			binaryErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		if strings.HasPrefix(binaryErr.Error(), "no go tool") {
			t.Skip(binaryErr)
		}
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// answerCall has the backend answer c's ringing INVITE and acknowledges
// the 200 through umrouter, failing the test (saying when) otherwise.
func answerCall(t *testing.T, gw *gateway, backend *backendUAS, c *call, when string) {
	t.Helper()
	backend.answer <- struct{}{}
	ok := gw.final("INVITE")
	if ok.StatusCode != 200 {
		t.Fatalf("INVITE %s answered %d, want 200", when, ok.StatusCode)
	}
	c.established(ok)
	gw.inDialog(c, "ACK", 1)
	backend.next("ACK")
}

// hangUp ends the established call c with a BYE that must reach the
// backend and be answered 200.
func hangUp(t *testing.T, gw *gateway, backend *backendUAS, c *call, when string) {
	t.Helper()
	gw.inDialog(c, "BYE", 2)
	backend.next("BYE")
	if r := gw.final("BYE"); r.StatusCode != 200 {
		t.Fatalf("BYE %s: %d, want 200", when, r.StatusCode)
	}
}
