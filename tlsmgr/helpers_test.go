package tlsmgr

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/testpki"
)

// fixture is a private PKI on disk: a CA trusted for clients and backends,
// our server certificate issued by it, and a Config pointing at both.
type fixture struct {
	dir    string
	ca     *testpki.CA
	server *testpki.Leaf
	cfg    Config
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), ca: testpki.NewCA(t, "Peers Root")}
	f.server = f.ca.Issue(t, serverOptions())
	certPath, keyPath := f.server.WriteFiles(t, f.dir, "server")
	f.cfg = Config{
		CertFile:     certPath,
		KeyFile:      keyPath,
		ClientCAFile: f.ca.WriteCAFile(t, f.dir),
	}
	return f
}

func serverOptions() testpki.LeafOptions {
	return testpki.LeafOptions{CN: "umrouter.test", DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}
}

// writeCRL writes a CRL of the fixture CA revoking leaves and points the
// config at it.
func (f *fixture) writeCRL(t *testing.T, revoked ...*testpki.Leaf) {
	t.Helper()
	f.cfg.CRLFile = filepath.Join(f.dir, "peers.crl")
	if err := os.WriteFile(f.cfg.CRLFile, f.ca.CRL(t, revoked...), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) open(t *testing.T) *Manager {
	t.Helper()
	m, err := Open(f.cfg, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return m
}

func pool(cas ...*testpki.CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

// handshake is the server side's view of one accepted connection.
type handshake struct {
	err   error
	state tls.ConnectionState
}

// tlsServer accepts on loopback, handshakes each connection with cfg,
// reports the result and, on success, writes "ok" and closes.
type tlsServer struct {
	addr    string
	results chan handshake
}

func serve(t *testing.T, cfg *tls.Config) *tlsServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsServer{addr: ln.Addr().String(), results: make(chan handshake, 16)}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				tc := tls.Server(c, cfg)
				defer tc.Close()
				_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
				err := tc.Handshake()
				if err == nil {
					_, err = tc.Write([]byte("ok"))
				}
				s.results <- handshake{err: err, state: tc.ConnectionState()}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return s
}

// next returns the server's result for the latest connection.
func (s *tlsServer) next(t *testing.T) handshake {
	t.Helper()
	select {
	case h := <-s.results:
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("server reported no handshake")
		return handshake{}
	}
}

// dial connects, handshakes and reads the server's "ok", so that a refusal
// decided after the client's side of the handshake (TLS 1.3 client
// certificates) and TLS 1.3 session tickets both reach the client.
func dial(t *testing.T, addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err == nil && string(got) != "ok" {
		err = errors.New("server sent " + string(got))
	}
	return c.ConnectionState(), err
}

// clientOf is a peer presenting leaf (none when nil) and trusting ca. It
// presents leaf whatever CAs the server advertises, as a SIP device
// configured with one certificate does; crypto/tls's own selection from
// Certificates would send nothing when the CA is not advertised.
func clientOf(leaf *testpki.Leaf, ca *testpki.CA) *tls.Config {
	cfg := &tls.Config{RootCAs: pool(ca), ServerName: "localhost"}
	if leaf != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &leaf.TLS, nil
		}
	}
	return cfg
}

// legacyKeyPEM encodes leaf's key as "EC PRIVATE KEY" (SEC 1) or "RSA
// PRIVATE KEY" (PKCS#1).
func legacyKeyPEM(t *testing.T, leaf *testpki.Leaf) []byte {
	t.Helper()
	switch k := leaf.Key.(type) {
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	}
	t.Fatalf("key type %T", leaf.Key)
	return nil
}
