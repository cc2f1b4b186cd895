package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/sipptest"
	"github.com/umrouter/umrouter/internal/testpki"
)

// secretDir lays out certificate files as a mounted Kubernetes Secret:
// dir/tls.crt -> ..data/tls.crt, ..data -> ..<version>/, swapped atomically.
type secretDir struct {
	dir string
	n   int
}

func (s *secretDir) publish(t *testing.T, leaf *testpki.Leaf) {
	t.Helper()
	s.n++
	version := fmt.Sprintf("..v%d", s.n)
	if err := os.Mkdir(filepath.Join(s.dir, version), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM} {
		if err := os.WriteFile(filepath.Join(s.dir, version, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(s.dir, "..data_tmp")
	if err := os.Symlink(version, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if s.n == 1 {
		for _, name := range []string{"tls.crt", "tls.key"} {
			if err := os.Symlink(filepath.Join("..data", name), filepath.Join(s.dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// servedSerial is the serial of the certificate a new handshake gets.
func servedSerial(addr string, pki *testPKI) (string, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(&d, "tcp", addr, &tls.Config{ServerName: "localhost", RootCAs: poolOf(pki.ca.Cert),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pki.gw.TLS, nil }})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

// TestTwentyCertificateSwapsDuringSteadyCallsLoseNoCall: the certificate
// is replaced 20 times, Kubernetes-style, while calls flow on established
// connections and on connections opened after each swap; every new
// handshake after a swap sees the new certificate and no call fails.
func TestTwentyCertificateSwapsDuringSteadyCallsLoseNoCall(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	secret := &secretDir{dir: t.TempDir()}
	serverLeaf := func() *testpki.Leaf {
		return pki.ca.Issue(t, testpki.LeafOptions{CN: "umrouter", DNS: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	}
	secret.publish(t, serverLeaf())
	pki.srvCert, pki.srvKey = filepath.Join(secret.dir, "tls.crt"), filepath.Join(secret.dir, "tls.key")
	cfg, plans := baseConfig(uas.Addr())
	p := startProxy(t, pki, cfg, plans)
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() { watchDone <- p.certs.Watch(ctx) }()
	defer func() { cancel(); <-watchDone }()
	select {
	case <-p.certs.Watching():
	case err := <-watchDone:
		t.Fatalf("Watch ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not start watching")
	}

	stop := make(chan struct{})
	var calls, failed atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func(fresh bool) {
			defer wg.Done()
			c, err := dialGateway(t, p.tlsAddr, pki, &pki.gw.TLS, nil)
			for n := 0; n < 5000 && err == nil; n++ { // bounded stream
				select {
				case <-stop:
					return
				default:
				}
				if err = placeCall(c); err != nil {
					break
				}
				calls.Add(1)
				if fresh && n%5 == 4 { // a new handshake every five calls
					c.conn.Close()
					c, err = dialGateway(t, p.tlsAddr, pki, &pki.gw.TLS, nil)
				}
			}
			if err != nil {
				failed.Add(1)
				errMu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				errMu.Unlock()
			}
		}(i > 0)
	}
	for swap := 0; swap < 20; swap++ {
		leaf := serverLeaf()
		secret.publish(t, leaf)
		want := leaf.Cert.SerialNumber.String()
		waitFor(t, fmt.Sprintf("swap %d served to new handshakes", swap+1), func() bool {
			got, err := servedSerial(p.tlsAddr, pki)
			return err == nil && got == want
		})
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d call streams failed across 20 swaps: %v", failed.Load(), firstErr)
	}
	if calls.Load() < 20 {
		t.Fatalf("only %d calls during the swaps", calls.Load())
	}
	t.Logf("%d calls during 20 certificate swaps, none failed", calls.Load())
}
