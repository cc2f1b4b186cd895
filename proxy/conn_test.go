package proxy

import (
	"crypto/tls"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// wireCounter counts the bytes a connection reads off the wire.
type wireCounter struct {
	net.Conn
	n atomic.Int64
}

func (c *wireCounter) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// A gateway that ends its connection first (as one reconnecting for every
// OPTIONS does) is not sent a TLS close_notify: nobody would read it, and
// encrypting and writing it is a share of every short connection's cost.
func TestGatewayThatClosesFirstIsNotSentCloseNotify(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9") // never reached
	p := startProxy(t, pki, cfg, plans)

	raw, err := net.DialTimeout("tcp", p.tlsAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wire := &wireCounter{Conn: raw}
	gw := &p.pki.gw.TLS
	tc := tls.Client(wire, &tls.Config{
		ServerName: "localhost", RootCAs: poolOf(pki.ca.Cert),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return gw, nil },
	})
	c := newSIPClient(t, tc)
	c.send(optionsTo(c, ""))
	if r := c.response(5 * time.Second); r.StatusCode != 200 {
		t.Fatalf("OPTIONS: %s", r.StartLine())
	}
	before := wire.n.Load()
	if err := tc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := c.closed(5 * time.Second); err != nil && strings.Contains(err.Error(), "still open") {
		t.Fatal(err)
	}
	if got := wire.n.Load() - before; got != 0 {
		t.Fatalf("umrouter sent %d bytes after the gateway closed (a close_notify alert), want none", got)
	}
}
