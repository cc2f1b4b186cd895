package tlsmgr

import (
	"crypto/tls"
	"testing"

	"github.com/umrouter/umrouter/internal/testpki"
)

func TestResumedSessionIsVerifiedAndRevocationAppliesOnResumption(t *testing.T) {
	for _, v := range tlsVersions {
		t.Run(v.name, func(t *testing.T) {
			f := newFixture(t)
			f.writeCRL(t) // nothing revoked yet
			m := f.open(t)
			srv := serve(t, m.ServerConfig())
			client := f.ca.Issue(t, testpki.LeafOptions{CN: "gw1.example.com"})
			cfg := clientOf(client, f.ca)
			cfg.MinVersion, cfg.MaxVersion = v.v, v.v
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)

			if _, err := dial(t, srv.addr, cfg); err != nil {
				t.Fatalf("first handshake: %v", err)
			}
			if h := srv.next(t); h.err != nil || h.state.DidResume {
				t.Fatalf("first handshake: err %v resumed %v, want a full handshake", h.err, h.state.DidResume)
			}

			cs, err := dial(t, srv.addr, cfg)
			if err != nil {
				t.Fatalf("resumed handshake: %v", err)
			}
			h := srv.next(t)
			if h.err != nil || !h.state.DidResume || !cs.DidResume {
				t.Fatalf("second handshake: err %v server resumed %v client resumed %v, want a resumed session",
					h.err, h.state.DidResume, cs.DidResume)
			}
			if len(h.state.PeerCertificates) == 0 || h.state.PeerCertificates[0].SerialNumber.Cmp(client.Cert.SerialNumber) != 0 {
				t.Fatal("resumed session lost the client certificate")
			}

			f.writeCRL(t, client)
			if err := m.Reload(); err != nil {
				t.Fatal(err)
			}
			if _, err := dial(t, srv.addr, cfg); err == nil {
				t.Fatal("revoked client resumed its session")
			}
			h = srv.next(t)
			if !h.state.DidResume {
				t.Fatal("refusal came from a full handshake; the test must exercise resumption")
			}
			if got := HandshakeFailureReason(h.err); got != ReasonRevoked {
				t.Errorf("reason = %q (err %v), want revoked", got, h.err)
			}
		})
	}
}
