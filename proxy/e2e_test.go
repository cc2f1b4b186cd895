package proxy

import (
	"fmt"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/umrouter/umrouter/internal/sipptest"
)

// placeCall runs INVITE/100/180/200/ACK/BYE/200 on c and reports the first problem.
func placeCall(c *sipClient) error {
	inv, d := c.invite("12345")
	c.send(inv)
	var codes []int
	for {
		r := c.response(10 * time.Second)
		codes = append(codes, r.StatusCode)
		if r.StatusCode >= 200 {
			if r.StatusCode != 200 {
				return fmt.Errorf("INVITE answered %d (codes %v)", r.StatusCode, codes)
			}
			d.establish(r)
			break
		}
	}
	if len(d.routes) != 2 {
		return fmt.Errorf("want our two Record-Route entries, got %v", d.routes)
	}
	c.send(c.inDialog(d, "ACK"))
	c.send(c.inDialog(d, "BYE"))
	r := c.responseTo("BYE", 10*time.Second)
	if r.StatusCode != 200 {
		return fmt.Errorf("BYE answered %s", r.StartLine())
	}
	return nil
}

func TestCallsFromTLSGatewayCompleteAtSIPpBackend(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	p := startProxy(t, pki, cfg, plans)

	const conns, callsPerConn = 10, 20
	for _, err := range callsInParallel(t, p, conns, callsPerConn, placeCall) {
		t.Error(err)
	}
	st, err := uas.WaitSuccessful(conns*callsPerConn, 20*time.Second)
	if err != nil {
		t.Fatalf("SIPp UAS: %v (stats %+v)", err, st)
	}
}

// TestBackendByeReachesTheGatewayOverItsTLSConnection: a request from the
// backend side follows umrouter's Record-Route back to the gateway, over the
// TLS connection the call came in on.
func TestBackendByeReachesTheGatewayOverItsTLSConnection(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas_backend_bye.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	inv, d := c.invite("12345")
	c.send(inv)
	d.establish(c.finalResponse(10 * time.Second))
	c.send(c.inDialog(d, "ACK"))
	m := c.next(10 * time.Second)
	bye, ok := m.(*sip.Request)
	if !ok || bye.Method != sip.BYE {
		t.Fatalf("want the backend's BYE, got %v", m)
	}
	if bye.CallID().Value() != d.callID {
		t.Fatalf("BYE for call %q, want %q", bye.CallID().Value(), d.callID)
	}
	c.send(sip.NewResponseFromRequest(bye, 200, "OK", nil).String())
	if st, err := uas.WaitSuccessful(1, 10*time.Second); err != nil {
		t.Fatalf("backend did not get the 200 to its BYE: %v (%+v)", err, st)
	}
}
