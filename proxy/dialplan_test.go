package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/umrouter/umrouter/dialplan"
	"github.com/umrouter/umrouter/internal/sipptest"
)

const sdesSDP = "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
	"m=audio 40000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n" +
	"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"

// securedSetup is a gateway on a Secured plan whose backend answers with
// the given SIPp scenario.
func securedSetup(t *testing.T, scenario string) (*testProxy, *sipClient, *sipptest.UAS) {
	t.Helper()
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: scenario})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	plans[0].Security = dialplan.Secured
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	return p, c, uas
}

func TestSecuredPlanPassesSDESOfferAndSRTPAnswer(t *testing.T) {
	_, c, uas := securedSetup(t, "uas_srtp.xml")
	inv, d := c.inviteSDP("12345", sdesSDP)
	c.send(inv)
	r := c.finalResponse(10 * time.Second)
	if r.StatusCode != 200 {
		t.Fatalf("want 200, got %s", r.StartLine())
	}
	d.establish(r)
	c.send(c.inDialog(d, "ACK"))
	c.send(c.inDialog(d, "BYE"))
	if r := c.responseTo("BYE", 10*time.Second); r.StatusCode != 200 {
		t.Fatalf("BYE: %s", r.StartLine())
	}
	if _, err := uas.WaitSuccessful(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestSecuredPlanRefusesPlainRTPOfferWith488(t *testing.T) {
	p, c, uas := securedSetup(t, "uas_srtp.xml")
	inv, _ := c.invite("12345")
	c.send(inv)
	r := c.finalResponse(5 * time.Second)
	if r.StatusCode != 488 {
		t.Fatalf("want 488, got %s", r.StartLine())
	}
	if w := r.GetHeader("Warning"); w == nil || !strings.HasPrefix(w.Value(), `399 127.0.0.1 "`) || !strings.Contains(w.Value(), "RTP/AVP") {
		t.Fatalf("want a Warning naming RTP/AVP, got %v", w)
	}
	if got := testutil.ToFloat64(p.m.Refusals.WithLabelValues("488", dialplan.ReasonSRTPRequired)); got != 1 {
		t.Fatalf("refusal counted %v times under srtp_required", got)
	}
	if st, _ := uas.Stats(); st.IncomingCalls != 0 {
		t.Fatalf("the refused offer reached the backend (%d calls)", st.IncomingCalls)
	}
}

func TestSecuredPlanEndsCallWhoseBackendAnswersPlainRTP(t *testing.T) {
	_, c, uas := securedSetup(t, "uas.xml") // answers RTP/AVP whatever the offer
	inv, _ := c.inviteSDP("12345", sdesSDP)
	c.send(inv)
	r := c.finalResponse(10 * time.Second)
	if r.StatusCode != 488 {
		t.Fatalf("want 488 in place of the insecure 200, got %s", r.StartLine())
	}
	// The backend's side of the call was acknowledged and hung up.
	if _, err := uas.WaitSuccessful(1, 10*time.Second); err != nil {
		t.Fatalf("backend call not ended cleanly: %v", err)
	}
}

func TestDialedNumberNotValidForThePlanGets484Or404(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9")
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	for _, tc := range []struct {
		user string
		code int
	}{{"1234", 484}, {"123456", 404}, {"12a45", 404}} {
		inv, _ := c.invite(tc.user)
		c.send(inv)
		if r := c.finalResponse(5 * time.Second); r.StatusCode != tc.code {
			t.Errorf("dialing %q on a 5-digit plan: want %d, got %s", tc.user, tc.code, r.StartLine())
		}
	}
}

func TestHuntGroupChoosesThePlanByPilotNumber(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	plans = append(plans, dialplan.Plan{Name: "vip", Security: dialplan.Secured, URIType: dialplan.TelephoneExtension, NumberOfDigits: 5})
	cfg.Gateways[0].HuntGroups = []HuntGroup{{Pilot: "55555", DialPlan: "vip"}}
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	inv, _ := c.invite("55555") // the secured hunt group: plain RTP refused
	c.send(inv)
	if r := c.finalResponse(5 * time.Second); r.StatusCode != 488 {
		t.Fatalf("pilot of the secured hunt group: want 488, got %s", r.StartLine())
	}
	if err := placeCall(c); err != nil { // another number: the gateway's sip-secured plan
		t.Fatal(err)
	}
}
