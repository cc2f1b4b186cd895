package kamailiotest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/sipptest"
	"github.com/umrouter/umrouter/internal/testpki"
)

// TestSIPpThroughKamailioOverTLS: SIPp UAC (UDP) -> Kamailio -> mutual TLS
// -> a minimal Go SIP responder that stands where umrouter will.
func TestSIPpThroughKamailioOverTLS(t *testing.T) {
	Binary(t)
	sipptest.Binary(t)
	dir := t.TempDir()
	ca := testpki.NewCA(t, "kamailiotest CA")
	caFile := ca.WriteCAFile(t, dir)
	server := ca.Issue(t, testpki.LeafOptions{CN: "localhost", DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	client := ca.Issue(t, testpki.LeafOptions{CN: "kamailio.test", DNS: []string{"kamailio.test"}})
	clientCert, clientKey := client.WriteFiles(t, dir, "kamailio")

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	r := startResponder(t, &tls.Config{
		Certificates: []tls.Certificate{server.TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	})

	k := Start(t, Options{
		NextHop:        fmt.Sprintf("sip:%s;transport=tls", r.addr),
		ClientCertFile: clientCert,
		ClientKeyFile:  clientKey,
		CAFile:         caFile,
		ServerName:     "localhost",
	})

	const n = 10
	res := sipptest.RunUAC(t, sipptest.UACOptions{
		Remote:   k.UDPAddr(),
		Scenario: "uac_tls.xml",
		Calls:    n, Rate: 20, Limit: 5,
		Timeout: 60 * time.Second,
	})
	if res.ExitCode != 0 || res.Successful != n || res.Failed != 0 {
		t.Fatalf("UAC: exit %d, %d successful, %d failed, want %d\n%s", res.ExitCode, res.Successful, res.Failed, n, res.ErrorLog)
	}
	got := r.snapshot()
	if got.invites != n || got.acks != n || got.byes != n {
		t.Errorf("responder saw %d INVITE, %d ACK, %d BYE; want %d each", got.invites, got.acks, got.byes, n)
	}
	if len(got.peerDNS) == 0 {
		t.Fatal("responder saw no TLS connection with a client certificate")
	}
	for _, dns := range got.peerDNS {
		if !slices.Contains(dns, "kamailio.test") {
			t.Errorf("client certificate SAN DNS %v, want kamailio.test", dns)
		}
	}
	for _, sni := range got.sni {
		if sni != "localhost" {
			t.Errorf("SNI %q, want localhost", sni)
		}
	}
}

// TestKamailioRefusesUntrustedServer: with a CA that did not issue the next
// hop's certificate, Kamailio must not deliver the INVITE.
func TestKamailioRefusesUntrustedServer(t *testing.T) {
	Binary(t)
	sipptest.Binary(t)
	dir := t.TempDir()
	ca := testpki.NewCA(t, "real CA")
	other := testpki.NewCA(t, "other CA")
	server := ca.Issue(t, testpki.LeafOptions{DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	client := other.Issue(t, testpki.LeafOptions{DNS: []string{"kamailio.test"}})
	clientCert, clientKey := client.WriteFiles(t, dir, "kamailio")
	r := startResponder(t, &tls.Config{Certificates: []tls.Certificate{server.TLS}, ClientAuth: tls.RequestClientCert})
	k := Start(t, Options{
		NextHop:        fmt.Sprintf("sip:%s;transport=tls", r.addr),
		ClientCertFile: clientCert, ClientKeyFile: clientKey,
		CAFile: other.WriteCAFile(t, dir),
	})
	res := sipptest.RunUAC(t, sipptest.UACOptions{Remote: k.UDPAddr(), Scenario: "uac_tls.xml", Calls: 1, Timeout: 20 * time.Second})
	if res.Successful != 0 {
		t.Fatalf("call succeeded through a next hop with an untrusted certificate: %+v", res)
	}
	if got := r.snapshot(); got.invites != 0 {
		t.Fatalf("responder received %d INVITE over an unverified connection", got.invites)
	}
}

// responder is a minimal SIP-over-TLS UAS: 200 to INVITE (with To-tag,
// Record-Route copied, Contact), ACK absorbed, 200 to BYE and OPTIONS.
type responder struct {
	t    *testing.T
	ln   net.Listener
	addr string
	mu   sync.Mutex
	seen seen
	wg   sync.WaitGroup
}

type seen struct {
	invites, acks, byes int
	peerDNS             [][]string
	sni                 []string
}

func startResponder(t *testing.T, cfg *tls.Config) *responder {
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &responder{t: t, ln: ln, addr: ln.Addr().String()}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(func() {
		ln.Close()
		r.wg.Wait()
	})
	return r
}

func (r *responder) snapshot() seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen
}

func (r *responder) accept() {
	defer r.wg.Done()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		conns = append(conns, c)
		r.wg.Add(1)
		go r.serve(c.(*tls.Conn))
	}
}

func (r *responder) serve(c *tls.Conn) {
	defer r.wg.Done()
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	if err := c.Handshake(); err != nil {
		r.t.Logf("responder: handshake: %v", err)
		return
	}
	st := c.ConnectionState()
	r.mu.Lock()
	if len(st.PeerCertificates) > 0 {
		r.seen.peerDNS = append(r.seen.peerDNS, st.PeerCertificates[0].DNSNames)
	}
	r.seen.sni = append(r.seen.sni, st.ServerName)
	r.mu.Unlock()
	br := bufio.NewReader(c)
	for range 100000 {
		start, hdr, err := readMessage(br)
		if err != nil {
			if err != io.EOF && !strings.Contains(err.Error(), "closed") {
				r.t.Logf("responder: read: %v", err)
			}
			return
		}
		method, _, _ := strings.Cut(start, " ")
		r.mu.Lock()
		switch method {
		case "INVITE":
			r.seen.invites++
		case "ACK":
			r.seen.acks++
		case "BYE":
			r.seen.byes++
		}
		r.mu.Unlock()
		switch method {
		case "ACK":
			continue
		case "INVITE", "BYE", "OPTIONS":
		default:
			if strings.HasPrefix(start, "SIP/2.0") {
				continue // a response: nothing sent that needs one
			}
		}
		if _, err := c.Write(response(hdr, method, r.addr)); err != nil {
			return
		}
	}
}

// readMessage reads one SIP message from a stream (skipping CRLF
// keepalives) and returns its start line and headers; the body is dropped.
func readMessage(br *bufio.Reader) (string, textproto.MIMEHeader, error) {
	tp := textproto.NewReader(br)
	var start string
	for range 100 {
		line, err := tp.ReadLine()
		if err != nil {
			return "", nil, err
		}
		if line != "" {
			start = line
			break
		}
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return "", nil, err
	}
	if cl := hdr.Get("Content-Length"); cl != "" {
		n, err := strconv.Atoi(strings.TrimSpace(cl))
		if err != nil || n < 0 || n > 65535 {
			return "", nil, fmt.Errorf("bad Content-Length %q", cl)
		}
		if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
			return "", nil, err
		}
	}
	return start, hdr, nil
}

func response(hdr textproto.MIMEHeader, method, addr string) []byte {
	var b strings.Builder
	b.WriteString("SIP/2.0 200 OK\r\n")
	for _, v := range hdr.Values("Via") {
		fmt.Fprintf(&b, "Via: %s\r\n", v)
	}
	if method == "INVITE" {
		for _, v := range hdr.Values("Record-Route") {
			fmt.Fprintf(&b, "Record-Route: %s\r\n", v)
		}
	}
	fmt.Fprintf(&b, "From: %s\r\n", hdr.Get("From"))
	to := hdr.Get("To")
	if !strings.Contains(to, ";tag=") {
		to += ";tag=responder-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	fmt.Fprintf(&b, "To: %s\r\n", to)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", hdr.Get("Call-ID"))
	fmt.Fprintf(&b, "CSeq: %s\r\n", hdr.Get("CSeq"))
	fmt.Fprintf(&b, "Contact: <sip:%s;transport=tls>\r\n", addr)
	if method == "INVITE" {
		sdp := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
		fmt.Fprintf(&b, "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", len(sdp), sdp)
	} else {
		b.WriteString("Content-Length: 0\r\n\r\n")
	}
	return []byte(b.String())
}
