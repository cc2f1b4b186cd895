package proxy

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/sipptest"
)

// TestMessagesKeepTheirOrderThroughTheProxy proves, over 500 calls, the two
// orderings sipgo v1.7.3 loses (DESIGN.md, "Known traps"): a backend's 180
// and 200 sent back to back reach the gateway in that order, and a
// gateway's ACK followed at once by its BYE reach the backend in that order
// (SIPp's scenario waits for the ACK before the BYE and counts a call
// failed when the BYE comes first).
func TestMessagesKeepTheirOrderThroughTheProxy(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas_180_200_fast.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	p := startProxy(t, pki, cfg, plans)

	const conns, callsPerConn = 5, 100
	for _, err := range callsInParallel(t, p, conns, callsPerConn, callExpectingRingingThenOK) {
		t.Error(err)
	}
	st, err := uas.WaitSuccessful(conns*callsPerConn, 20*time.Second)
	if err != nil {
		t.Fatalf("SIPp UAS saw calls fail (BYE before ACK?): %v (%+v)", err, st)
	}
	if st.FailedCalls != 0 {
		t.Fatalf("SIPp UAS counted %d failed calls", st.FailedCalls)
	}
}

// callExpectingRingingThenOK places a call and fails unless the responses
// arrive as 180, 200 (after umrouter's 100 Trying, which it only sends when
// the backend takes 200 ms to answer), then sends ACK and BYE back to back.
func callExpectingRingingThenOK(c *sipClient) error {
	inv, d := c.invite("12345")
	c.send(inv)
	var codes []int
	for {
		r := c.response(10 * time.Second)
		codes = append(codes, r.StatusCode)
		if r.StatusCode >= 200 {
			d.establish(r)
			break
		}
	}
	if s := fmt.Sprint(codes); s != "[180 200]" && s != "[100 180 200]" {
		return fmt.Errorf("responses arrived as %v, want [(100) 180 200]", codes)
	}
	c.send(c.inDialog(d, "ACK") + c.inDialog(d, "BYE")) // one write: back to back
	r := c.responseTo("BYE", 10*time.Second)
	if r.StatusCode != 200 {
		return fmt.Errorf("BYE answered %s", r.StartLine())
	}
	return nil
}

// TestSilentBackendMakesUmrouterSendTrying: when the backend has not
// answered an INVITE within 200 ms, umrouter answers 100 Trying itself (RFC
// 3261 section 17.2.1), with rport and received filled in (RFC 3581); a
// backend that rings sooner makes it needless (TestMessagesKeepTheirOrder).
func TestSilentBackendMakesUmrouterSendTrying(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	pki := newTestPKI(t)
	cfg, plans := baseConfig(silent.LocalAddr().String())
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	inv, _ := c.invite("12345")
	inv = strings.Replace(inv, "@gw\r\n", "@gw;rport\r\n", 1) // the top Via asks for rport
	if !strings.Contains(inv, ";rport\r\n") {
		t.Fatalf("no Via to add rport to:\n%s", inv)
	}
	sent := time.Now()
	c.send(inv)
	r := c.response(5 * time.Second)
	if r.StatusCode != 100 {
		t.Fatalf("first response %s, want 100 Trying", r.StartLine())
	}
	if waited := time.Since(sent); waited < tryingDelay {
		t.Errorf("100 Trying after %s, before the backend had %s to ring", waited, tryingDelay)
	}
	via := r.Via()
	if rp, _ := via.Params.Get("rport"); rp == "" {
		t.Errorf("100 Trying's Via has no rport value: %s", via.Value())
	}
	if _, ok := via.Params.Get("received"); !ok {
		t.Errorf("100 Trying's Via has no received: %s", via.Value())
	}
}
