package proxy

import (
	"strings"
	"testing"

	"github.com/umrouter/umrouter/dialplan"
)

func TestSecuredPlanMayNotLeaveOverPlaintextToARemoteBackend(t *testing.T) {
	cases := []struct {
		name      string
		transport string
		server    string
		allow     bool
		security  dialplan.Security
		wantErr   bool
	}{
		{"tls backend", "tls", "um1.example.com:5061", false, dialplan.Secured, false},
		{"udp to a remote host", "udp", "um1.example.com:5060", false, dialplan.Secured, true},
		{"tcp to a remote host, sip-secured", "tcp", "10.1.2.3:5060", false, dialplan.SIPSecured, true},
		{"udp to loopback (sidecar)", "udp", "127.0.0.1:5060", false, dialplan.Secured, false},
		{"udp to localhost (sidecar)", "udp", "localhost:5060", false, dialplan.Secured, false},
		{"allow_plaintext set", "udp", "um1.example.com:5060", true, dialplan.Secured, false},
		{"unsecured plan", "udp", "um1.example.com:5060", false, dialplan.Unsecured, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Advertise: "um.example.com", Listen: ListenConfig{TLS: ":5061"},
				Gateways: []Gateway{{Name: "gw", Address: "gw.example.com", DialPlan: "p"}},
				Backends: BackendsConfig{Transport: tc.transport, AllowPlaintext: tc.allow, Servers: []Backend{{Address: tc.server}}}}
			cfg.SetDefaults()
			errs := cfg.Validate(dialplan.Plans{{Name: "p", Security: tc.security}})
			got := strings.Contains(errs.Error(), "plain")
			if got != tc.wantErr {
				t.Fatalf("downgrade refused = %v, want %v (%v)", got, tc.wantErr, errs)
			}
		})
	}
}
