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

func TestLyncGatewayNeedsASIPURIDialPlan(t *testing.T) {
	for _, tc := range []struct {
		uriType dialplan.URIType
		wantErr bool
	}{{dialplan.SIPURI, false}, {dialplan.TelephoneExtension, true}, {dialplan.E164, true}, {"", true}} {
		cfg := Config{Advertise: "um.example.com", Listen: ListenConfig{TLS: ":5061"},
			Gateways: []Gateway{{Name: "lync", Address: "pool.example.com", Kind: "lync", DialPlan: "p"}},
			Backends: BackendsConfig{Servers: []Backend{{Address: "um1.example.com:5061"}}}}
		cfg.SetDefaults()
		errs := cfg.Validate(dialplan.Plans{{Name: "p", Security: dialplan.Secured, URIType: tc.uriType}})
		if got := strings.Contains(errs.Error(), "lync gateway needs"); got != tc.wantErr {
			t.Errorf("uri_type %q: refused = %v, want %v (%v)", tc.uriType, got, tc.wantErr, errs)
		}
	}
}

func TestGatewayRequestRateMayNotBeNegative(t *testing.T) {
	for _, tc := range []struct {
		rate    int
		wantErr bool
	}{{0, false}, {50, false}, {-1, true}} {
		cfg := Config{Advertise: "um.example.com", Listen: ListenConfig{TLS: ":5061"},
			Gateways: []Gateway{{Name: "gw", Address: "gw.example.com", DialPlan: "p", RequestsPerSecond: tc.rate}},
			Backends: BackendsConfig{Servers: []Backend{{Address: "um1.example.com:5061"}}}}
		cfg.SetDefaults()
		errs := cfg.Validate(dialplan.Plans{{Name: "p", Security: dialplan.Secured}})
		if got := strings.Contains(errs.Error(), "gateways[0].requests_per_second"); got != tc.wantErr {
			t.Errorf("requests_per_second %d: refused = %v, want %v (%v)", tc.rate, got, tc.wantErr, errs)
		}
	}
}
