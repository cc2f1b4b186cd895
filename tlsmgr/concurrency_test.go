package tlsmgr

import (
	"os"
	"sync"
	"testing"

	"github.com/umrouter/umrouter/internal/testpki"
)

func TestHandshakesDuringReloadsAlwaysSeeACompleteSnapshot(t *testing.T) {
	// Under -race this proves readers and Reload share no unsynchronised
	// state; every handshake must succeed with one of the two certificates.
	f := newFixture(t)
	m := f.open(t)
	srv := serve(t, m.ServerConfig())
	client := f.ca.Issue(t, testpki.LeafOptions{})
	a, b := f.server, f.ca.Issue(t, serverOptions())

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			leaf := a
			if i%2 == 1 {
				leaf = b
			}
			// os.WriteFile, not the t.Fatal helpers: this is not the test goroutine.
			if err := os.WriteFile(f.cfg.CertFile, leaf.CertPEM, 0o600); err != nil {
				t.Error(err)
				return
			}
			if err := os.WriteFile(f.cfg.KeyFile, leaf.KeyPEM, 0o600); err != nil {
				t.Error(err)
				return
			}
			if err := m.Reload(); err != nil {
				// A reload racing our own rewrite may read a cert with
				// the other key: refused, old snapshot kept. That is the
				// contract, not a failure.
				continue
			}
		}
	})
	for range 20 {
		cs, err := dial(t, srv.addr, clientOf(client, f.ca))
		if err != nil {
			t.Errorf("dial during reloads: %v", err)
			continue
		}
		if h := srv.next(t); h.err != nil {
			t.Errorf("server during reloads: %v", h.err)
		}
		got := cs.PeerCertificates[0].SerialNumber
		if got.Cmp(a.Cert.SerialNumber) != 0 && got.Cmp(b.Cert.SerialNumber) != 0 {
			t.Errorf("served unknown serial %x", got)
		}
	}
	close(stop)
	wg.Wait()
}
