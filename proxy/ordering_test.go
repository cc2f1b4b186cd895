package proxy

import (
	"fmt"
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
// arrive as 100, 180, 200, then sends ACK and BYE back to back.
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
	if fmt.Sprint(codes) != "[100 180 200]" {
		return fmt.Errorf("responses arrived as %v, want [100 180 200]", codes)
	}
	c.send(c.inDialog(d, "ACK") + c.inDialog(d, "BYE")) // one write: back to back
	r := c.responseTo("BYE", 10*time.Second)
	if r.StatusCode != 200 {
		return fmt.Errorf("BYE answered %s", r.StartLine())
	}
	return nil
}
