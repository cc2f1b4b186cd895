package proxy

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/sipptest"
)

// TestStartupModeChangesWhileACallIsUp switches tls -> dual -> tcp -> tls on
// a running server: listeners open and close as the mode says, and a call
// established before the first switch completes after the last.
func TestStartupModeChangesWhileACallIsUp(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	cfg.Listen.TLS = fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	cfg.Listen.TCP = fmt.Sprintf("127.0.0.1:%d", freeTCPPort(t))
	cfg.Gateways[0].DialPlan = "open"
	plans = append(plans, plans[0])
	plans[1].Name, plans[1].Security = "open", "unsecured"
	p := startProxy(t, pki, cfg, plans)
	tlsAddr := p.tlsAddr
	cfg.SetDefaults()

	c, err := dialGateway(t, tlsAddr, pki, &pki.gw.TLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	held := holdCall(t, c)

	listening := func(addr string) bool {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			nc.Close()
		}
		return err == nil
	}
	tcpAddr := cfg.Listen.TCP
	for _, step := range []struct {
		mode     string
		tls, tcp bool
	}{{"dual", true, true}, {"tcp", false, true}, {"tls", true, false}} {
		cfg.StartupMode = step.mode
		if err := p.s.Apply(cfg, plans); err != nil {
			t.Fatalf("apply %s: %v", step.mode, err)
		}
		if got := listening(tlsAddr); got != step.tls {
			t.Errorf("startup_mode %s: TLS listener up = %v, want %v", step.mode, got, step.tls)
		}
		if got := listening(tcpAddr); got != step.tcp {
			t.Errorf("startup_mode %s: TCP listener up = %v, want %v", step.mode, got, step.tcp)
		}
	}
	hangUp(t, c, held) // the call from before the switches is still up
	if _, err := uas.WaitSuccessful(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidConfigurationIsRefusedAndTheRunningOneStays(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	p := startProxy(t, pki, cfg, plans)
	bad := cfg
	bad.SetDefaults()
	bad.Gateways = []Gateway{{Name: "gw1", Address: gwName, Port: 5061, Kind: "gateway", DialPlan: "no-such-plan"}}
	if err := p.s.Apply(bad, plans); err == nil {
		t.Fatal("a gateway naming no dial plan was applied")
	}
	c := p.gateway(t)
	if err := placeCall(c); err != nil {
		t.Fatalf("after a refused reload: %v", err)
	}
}

func TestGatewayRemovedByReloadIsRefusedOnItsOpenConnection(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	if err := placeCall(c); err != nil {
		t.Fatal(err)
	}
	cfg.SetDefaults()
	cfg.Gateways = nil
	if err := p.s.Apply(cfg, plans); err != nil {
		t.Fatal(err)
	}
	inv, _ := c.invite("12345")
	c.send(inv)
	if r := c.response(5 * time.Second); r.StatusCode != 403 {
		t.Fatalf("removed gateway: want 403, got %s", r.StartLine())
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
