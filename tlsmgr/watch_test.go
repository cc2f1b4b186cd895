package tlsmgr

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/testpki"
)

// waitTimeout bounds every wait of these tests. It is a deadline for
// events that should come within about a second, not a measurement.
const waitTimeout = 15 * time.Second

// echoServer accepts mutual TLS connections with cfg and echoes every line
// back, keeping each connection open until the peer closes it: the
// long-lived connection of a gateway whose calls must survive a swap.
func echoServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// liveConn is a client connection to an echoServer.
type liveConn struct {
	*tls.Conn
	r *bufio.Reader
}

// dialLive connects and completes one echo exchange, so a client
// certificate refused after the client's side of a TLS 1.3 handshake
// shows up here.
func dialLive(t *testing.T, addr string, cfg *tls.Config) (*liveConn, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	lc := &liveConn{Conn: c, r: bufio.NewReader(c)}
	if err := lc.exchange("hello"); err != nil {
		c.Close()
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return lc, nil
}

// exchange sends one line and reads it back.
func (c *liveConn) exchange(msg string) error {
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg+"\n" {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func (c *liveConn) serial() *big.Int { return c.ConnectionState().PeerCertificates[0].SerialNumber }

// reloads records every reload attempt a Manager reports.
type reloads chan error

func watchReloads(t *testing.T, m *Manager) reloads {
	t.Helper()
	r := make(reloads, 64)
	m.SetOnReload(func(err error) { r <- err })
	return r
}

// startWatch runs m.Watch until the test ends and returns once the
// watches are in place.
func startWatch(t *testing.T, m *Manager) {
	t.Helper()
	ready := make(chan struct{})
	m.watching = func() { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Watch ended before watching: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("Watch did not start")
	}
}

// next returns the next reload result.
func (r reloads) next(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r:
		return err
	case <-time.After(waitTimeout):
		t.Fatal("no reload within the deadline")
		return nil
	}
}

// success waits for a successful reload. Refusals on the way are allowed
// (a certificate and its key written as two files may be seen half-done).
func (r reloads) success(t *testing.T) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case err := <-r:
			if err == nil {
				return
			}
			t.Logf("intermediate reload refused: %v", err)
		case <-deadline:
			t.Fatal("no successful reload within the deadline")
		}
	}
}

// refusal waits for a refused reload whose error mentions want; a
// successful reload on the way fails the test.
func (r reloads) refusal(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case err := <-r:
			if err == nil {
				t.Fatalf("bad material was accepted (want a refusal mentioning %q)", want)
			}
			if strings.Contains(err.Error(), want) {
				return
			}
			t.Logf("refused for another reason first: %v", err)
		case <-deadline:
			t.Fatalf("no refusal mentioning %q within the deadline", want)
		}
	}
}

// awaitSerial polls new handshakes until one presents want, and returns
// how long after since that happened.
func awaitSerial(t *testing.T, addr string, cfg *tls.Config, want *big.Int, since time.Time) time.Duration {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		c, err := dialLive(t, addr, cfg)
		if err != nil {
			t.Fatalf("new handshake: %v", err)
		}
		got := c.serial()
		c.Close()
		if got.Cmp(want) == 0 {
			return time.Since(since)
		}
		if time.Now().After(deadline) {
			t.Fatalf("new handshakes still present serial %x, want %x", got, want)
		}
	}
}

func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// k8sSecret lays out a directory as the kubelet mounts a Secret:
// dir/..<ts>/tls.crt, dir/..data -> ..<ts>, dir/tls.crt -> ..data/tls.crt.
type k8sSecret struct {
	dir     string
	current string
	n       int
}

func newK8sSecret(t *testing.T, dir string, leaf *testpki.Leaf) *k8sSecret {
	t.Helper()
	s := &k8sSecret{dir: dir}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s.swap(t, leaf)
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// swap does what the kubelet does on a Secret update: write a new
// timestamped directory, point ..data at it with an atomic rename, remove
// the old one.
func (s *k8sSecret) swap(t *testing.T, leaf *testpki.Leaf) {
	t.Helper()
	s.n++
	ts := "..2026_01_0" + string(rune('0'+s.n)) + "_12_00_00.000000001"
	if err := os.Mkdir(filepath.Join(s.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.dir, ts, "tls.crt"), string(leaf.CertPEM))
	writeFile(t, filepath.Join(s.dir, ts, "tls.key"), string(leaf.KeyPEM))
	tmp := filepath.Join(s.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if s.current != "" {
		if err := os.RemoveAll(filepath.Join(s.dir, s.current)); err != nil {
			t.Fatal(err)
		}
	}
	s.current = ts
}

func TestWatchSwapsCertificateReplacedOnDiskAndKeepsEstablishedConnections(t *testing.T) {
	tests := []struct {
		name string
		// setup places the first certificate and points cfg at it;
		// replace puts next in its place.
		setup   func(t *testing.T, f *fixture) (replace func(t *testing.T, next *testpki.Leaf))
		repeats int
	}{
		{name: "plain rewrite", repeats: 3, setup: func(t *testing.T, f *fixture) func(*testing.T, *testpki.Leaf) {
			return func(t *testing.T, next *testpki.Leaf) {
				writeFile(t, f.cfg.CertFile, string(next.CertPEM))
				writeFile(t, f.cfg.KeyFile, string(next.KeyPEM))
			}
		}},
		{name: "rename into place", repeats: 3, setup: func(t *testing.T, f *fixture) func(*testing.T, *testpki.Leaf) {
			return func(t *testing.T, next *testpki.Leaf) {
				writeAtomic(t, f.cfg.KeyFile, next.KeyPEM)
				writeAtomic(t, f.cfg.CertFile, next.CertPEM)
			}
		}},
		{name: "kubernetes secret symlink swap", repeats: 3, setup: func(t *testing.T, f *fixture) func(*testing.T, *testpki.Leaf) {
			secret := newK8sSecret(t, filepath.Join(f.dir, "secret"), f.server)
			f.cfg.CertFile = filepath.Join(secret.dir, "tls.crt")
			f.cfg.KeyFile = filepath.Join(secret.dir, "tls.key")
			return secret.swap
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			replace := tt.setup(t, f)
			m := f.open(t)
			r := watchReloads(t, m)
			startWatch(t, m)
			addr := echoServer(t, m.ServerConfig())
			client := clientOf(f.ca.Issue(t, testpki.LeafOptions{CN: "gw1.example.com"}), f.ca)

			established, err := dialLive(t, addr, client)
			if err != nil {
				t.Fatal(err)
			}
			first := established.serial()
			for i := range tt.repeats {
				next := f.ca.Issue(t, serverOptions())
				changed := time.Now()
				replace(t, next)
				r.success(t)
				took := awaitSerial(t, addr, client, next.Cert.SerialNumber, changed)
				t.Logf("swap %d: new handshakes present the new serial %v after the change", i+1, took)
				if err := established.exchange("after swap"); err != nil {
					t.Fatalf("established connection broken by swap %d: %v", i+1, err)
				}
				if established.serial().Cmp(first) != 0 {
					t.Fatal("established connection's certificate changed")
				}
			}
		})
	}
}

func TestWatchRefusesBadMaterialAndOldSerialKeepsServing(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name  string
		spoil func(t *testing.T, f *fixture)
		want  string
	}{
		{"corrupt certificate", func(t *testing.T, f *fixture) {
			writeAtomic(t, f.cfg.CertFile, []byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"))
		}, "server.crt"},
		{"key of another certificate", func(t *testing.T, f *fixture) {
			writeAtomic(t, f.cfg.KeyFile, f.ca.Issue(t, serverOptions()).KeyPEM)
		}, "does not match"},
		{"expired certificate", func(t *testing.T, f *fixture) {
			o := serverOptions()
			o.NotBefore, o.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
			expired := f.ca.Issue(t, o)
			writeAtomic(t, f.cfg.KeyFile, expired.KeyPEM)
			writeAtomic(t, f.cfg.CertFile, expired.CertPEM)
		}, "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			m := f.open(t)
			r := watchReloads(t, m)
			startWatch(t, m)
			addr := echoServer(t, m.ServerConfig())
			client := clientOf(f.ca.Issue(t, testpki.LeafOptions{}), f.ca)
			established, err := dialLive(t, addr, client)
			if err != nil {
				t.Fatal(err)
			}

			tt.spoil(t, f)
			r.refusal(t, tt.want)

			c, err := dialLive(t, addr, client)
			if err != nil {
				t.Fatalf("new handshake after refused reload: %v", err)
			}
			if c.serial().Cmp(f.server.Cert.SerialNumber) != 0 {
				t.Errorf("after refused reload served %x, want old %x", c.serial(), f.server.Cert.SerialNumber)
			}
			if err := established.exchange("still here"); err != nil {
				t.Errorf("established connection: %v", err)
			}
		})
	}
}

func TestWatchIgnoresEventsThatChangeNoContent(t *testing.T) {
	f := newFixture(t)
	m := f.open(t)
	r := watchReloads(t, m)
	checks := make(chan bool, 64)
	m.checked = func(reloaded bool) { checks <- reloaded }
	startWatch(t, m)
	look := func() bool {
		t.Helper()
		select {
		case reloaded := <-checks:
			return reloaded
		case <-time.After(waitTimeout):
			t.Fatal("Watch did not look at the files")
			return false
		}
	}

	// An unrelated file beside the certificate, then the same
	// certificate rewritten: Watch looks, and neither reloads nor reports.
	writeFile(t, filepath.Join(f.dir, "notes.txt"), "unrelated")
	if look() {
		t.Error("an unrelated file caused a reload")
	}
	writeAtomic(t, f.cfg.CertFile, f.server.CertPEM)
	if look() {
		t.Error("rewriting identical content caused a reload")
	}
	select {
	case err := <-r:
		t.Fatalf("OnReload called (%v) though nothing changed", err)
	default:
	}

	// A spoiled file is reported once, not at every later event.
	writeAtomic(t, f.cfg.CertFile, []byte("garbage"))
	if !look() {
		t.Fatal("a changed certificate was not reloaded")
	}
	if err := r.next(t); err == nil {
		t.Fatal("garbage accepted")
	}
	writeFile(t, filepath.Join(f.dir, "notes.txt"), "still unrelated")
	if look() {
		t.Error("the same refused content was tried again")
	}
}

func TestWatchReloadsCRLAndRefusesNewlyRevokedPeer(t *testing.T) {
	f := newFixture(t)
	f.writeCRL(t)
	m := f.open(t)
	r := watchReloads(t, m)
	startWatch(t, m)
	addr := echoServer(t, m.ServerConfig())
	peer := f.ca.Issue(t, testpki.LeafOptions{CN: "gw1.example.com"})
	if _, err := dialLive(t, addr, clientOf(peer, f.ca)); err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, f.cfg.CRLFile, f.ca.CRL(t, peer))
	r.success(t)
	if _, err := dialLive(t, addr, clientOf(peer, f.ca)); err == nil {
		t.Fatal("peer revoked by the reloaded CRL was accepted")
	}
}

func TestEnableOnRunningManagerSwitchesNewHandshakes(t *testing.T) {
	ca := testpki.NewCA(t, "Corp CA")
	dir := t.TempDir()
	cfg := Config{StateDir: filepath.Join(dir, "state"), ClientCAFile: ca.WriteCAFile(t, dir)}
	m, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := watchReloads(t, m)
	startWatch(t, m)
	addr := echoServer(t, m.ServerConfig())
	// Trusts both the self-signed default and the CA's certificate.
	roots := x509.NewCertPool()
	roots.AddCert(m.Leaf())
	roots.AddCert(ca.Cert)
	client := clientOf(ca.Issue(t, testpki.LeafOptions{}), ca)
	client.RootCAs = roots
	established, err := dialLive(t, addr, client)
	if err != nil {
		t.Fatal(err)
	}

	st, err := OpenStore(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	issued := ca.Issue(t, serverOptions())
	imp, err := st.Import(append(append([]byte{}, issued.CertPEM...), issued.KeyPEM...), "")
	if err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	if _, err := st.Enable(imp.Thumbprint); err != nil {
		t.Fatal(err)
	}
	r.success(t)
	took := awaitSerial(t, addr, client, issued.Cert.SerialNumber, changed)
	t.Logf("enable: new handshakes present the enabled certificate %v after the enable", took)
	if m.SelfSigned() {
		t.Error("SelfSigned still true after enabling a CA-issued certificate")
	}
	if err := established.exchange("after enable"); err != nil {
		t.Errorf("established connection: %v", err)
	}
}

func TestWatchFailsWhenADirectoryCannotBeWatched(t *testing.T) {
	f := newFixture(t)
	m := f.open(t)
	if err := os.RemoveAll(f.dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := m.Watch(ctx)
	if err == nil || !strings.Contains(err.Error(), f.dir) {
		t.Fatalf("Watch = %v, want an error naming %s", err, f.dir)
	}
}

func TestLinkDirsFollowsEveryLink(t *testing.T) {
	dir := t.TempDir()
	dir, _ = filepath.EvalSymlinks(dir)
	// certbot: conf/cert.pem -> live/x/fullchain.pem -> ../../archive/x/fullchain3.pem
	for _, d := range []string{"conf", "live/x", "archive/x"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "archive/x/fullchain3.pem"), "")
	must(t, os.Symlink("../../archive/x/fullchain3.pem", filepath.Join(dir, "live/x/fullchain.pem")))
	must(t, os.Symlink(filepath.Join(dir, "live/x/fullchain.pem"), filepath.Join(dir, "conf/cert.pem")))
	got := linkDirs(filepath.Join(dir, "conf/cert.pem"))
	want := []string{filepath.Join(dir, "conf"), filepath.Join(dir, "live/x"), filepath.Join(dir, "archive/x")}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("linkDirs = %v, want %v", got, want)
	}

	// A loop ends without hanging.
	must(t, os.Symlink("b", filepath.Join(dir, "a")))
	must(t, os.Symlink("a", filepath.Join(dir, "b")))
	if got := linkDirs(filepath.Join(dir, "a")); len(got) != maxLinkHops {
		t.Errorf("loop: %d dirs, want %d (one per hop)", len(got), maxLinkHops)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestTwentySwapsUnderSteadyTrafficLoseNothing(t *testing.T) {
	f := newFixture(t)
	secret := newK8sSecret(t, filepath.Join(f.dir, "secret"), f.server)
	f.cfg.CertFile = filepath.Join(secret.dir, "tls.crt")
	f.cfg.KeyFile = filepath.Join(secret.dir, "tls.key")
	m := f.open(t)
	r := watchReloads(t, m)
	startWatch(t, m)
	addr := echoServer(t, m.ServerConfig())
	client := clientOf(f.ca.Issue(t, testpki.LeafOptions{CN: "gw1.example.com"}), f.ca)
	established, err := dialLive(t, addr, client)
	if err != nil {
		t.Fatal(err)
	}

	// Steady traffic: new connections, one exchange each, until stopped.
	stop := make(chan struct{})
	type tally struct{ ok, failed int }
	result := make(chan tally, 1)
	go func() {
		var n tally
		defer func() { result <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", addr, client)
			if err == nil {
				lc := &liveConn{Conn: c, r: bufio.NewReader(c)}
				err = lc.exchange("call")
				c.Close()
			}
			if err != nil {
				n.failed++
				t.Errorf("connection during swaps: %v", err)
				continue
			}
			n.ok++
		}
	}()
	for i := range 20 {
		next := f.ca.Issue(t, serverOptions())
		secret.swap(t, next)
		r.success(t)
		if err := established.exchange("in-dialog request"); err != nil {
			t.Fatalf("established connection after swap %d: %v", i+1, err)
		}
	}
	close(stop)
	n := <-result
	t.Logf("20 swaps: %d connections with an exchange succeeded, %d failed", n.ok, n.failed)
	if n.ok == 0 {
		t.Error("no traffic ran during the swaps")
	}
}

// TestWatchSeesCertificateDirectoryDeletedThenRecreated: deleting the
// directory of cert_file is refused (the old certificate keeps serving);
// when the directory comes back with a new certificate, new handshakes get
// it within the deadline, without waiting for the minute's resync.
func TestWatchSeesCertificateDirectoryDeletedThenRecreated(t *testing.T) {
	f := newFixture(t)
	// Not in f.dir, which holds the CA file and so is watched anyway.
	certDir := filepath.Join(t.TempDir(), "certs")
	if err := os.Mkdir(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	f.cfg.CertFile, f.cfg.KeyFile = f.server.WriteFiles(t, certDir, "server")
	m := f.open(t)
	r := watchReloads(t, m)
	startWatch(t, m)
	addr := echoServer(t, m.ServerConfig())
	client := clientOf(f.ca.Issue(t, testpki.LeafOptions{}), f.ca)

	for round := range 2 { // a second time: the ancestor's watch is dropped and taken again
		if err := os.RemoveAll(certDir); err != nil {
			t.Fatal(err)
		}
		r.refusal(t, f.cfg.CertFile)
		c, err := dialLive(t, addr, client)
		if err != nil {
			t.Fatalf("round %d: new handshake with the directory gone: %v", round, err)
		}
		if c.serial().Cmp(m.Leaf().SerialNumber) != 0 {
			t.Fatalf("round %d: served %x with the directory gone, want the old %x", round, c.serial(), m.Leaf().SerialNumber)
		}

		next := f.ca.Issue(t, serverOptions())
		changed := time.Now()
		if err := os.Mkdir(certDir, 0o700); err != nil {
			t.Fatal(err)
		}
		writeAtomic(t, f.cfg.KeyFile, next.KeyPEM)
		writeAtomic(t, f.cfg.CertFile, next.CertPEM)
		r.success(t)
		took := awaitSerial(t, addr, client, next.Cert.SerialNumber, changed)
		t.Logf("round %d: the recreated directory's certificate served %v after the change", round, took)
		if took > 5*time.Second {
			t.Errorf("round %d: recreated directory seen after %v, want within seconds", round, took)
		}
	}
}
