package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/umrouter/umrouter/dialplan"
	"github.com/umrouter/umrouter/internal/baresiptest"
	"github.com/umrouter/umrouter/internal/sipptest"
)

// TestBaresipCallsAgainstSecuredPlan is the real-peer test of issue 4:
// baresip, over mutual TLS with the gateway's client certificate, places
// three calls to a Secured plan whose SIPp backend answers SRTP (SDES and
// DTLS attributes both). The SDES-SRTP and DTLS-SRTP offers are answered
// 200 and established, the plain RTP offer is refused with 488, all three
// as baresip itself reports them (its call events, and the final response
// in its SIP trace); the established calls are hung up by baresip, and the
// backend completed exactly the two admitted calls.
func TestBaresipCallsAgainstSecuredPlan(t *testing.T) {
	baresiptest.Binary(t) // skip (fail under CI=true) before starting anything
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas_srtp.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	plans[0].Security = dialplan.Secured
	p := startProxy(t, pki, cfg, plans)

	gwCert, gwKey := pki.gw.WriteFiles(t, t.TempDir(), "gw")
	const (
		sdesAOR = "sip:sdes@" + gwName
		dtlsAOR = "sip:dtls@" + gwName
		rtpAOR  = "sip:rtp@" + gwName
	)
	b := baresiptest.Start(t, baresiptest.Options{
		CertFile: gwCert, KeyFile: gwKey, CAFile: pki.caFile,
		Accounts: []baresiptest.Account{
			{AOR: sdesAOR, MediaEnc: baresiptest.MediaEncSDES},
			{AOR: dtlsAOR, MediaEnc: baresiptest.MediaEncDTLS},
			{AOR: rtpAOR, MediaEnc: baresiptest.MediaEncNone},
		},
		SIPTrace: true,
	})
	target := fmt.Sprintf("sip:12345@%s;transport=tls", p.tlsAddr)

	cases := []struct {
		name, aor string
		proto     string // the offer's m=audio protocol
		keying    string // the SDP attribute that keys it ("" = none)
		want      int
	}{
		{"SDES-SRTP", sdesAOR, "RTP/SAVP", "a=crypto:", 200},
		// baresip 1.0's dtls_srtp offers the AVPF profile.
		{"DTLS-SRTP", dtlsAOR, "UDP/TLS/RTP/SAVPF", "a=fingerprint:", 200},
		{"plain RTP", rtpAOR, "RTP/AVP", "", 488},
	}
	const wait = 15 * time.Second
	for _, tc := range cases {
		call, err := b.Dial(tc.aor, target, wait)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// The call offers what its account says, or the test proves nothing.
		offer, err := call.Offer(wait)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := baresipAudioProto(offer); got != tc.proto {
			t.Fatalf("%s: baresip offered m=audio %q, want %q:\n%s", tc.name, got, tc.proto, offer)
		}
		if tc.keying != "" && !strings.Contains(offer, "\r\n"+tc.keying) {
			t.Fatalf("%s: offer without %s:\n%s", tc.name, tc.keying, offer)
		}

		res, err := call.Wait(wait)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		final, err := call.FinalResponse(wait)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if final.StatusCode() != tc.want {
			t.Fatalf("%s: baresip received %q, want %d", tc.name, final.StartLine, tc.want)
		}
		if tc.want == 200 {
			if res.Type != "CALL_ESTABLISHED" {
				t.Fatalf("%s: baresip reports %s, want the call established", tc.name, res)
			}
			closed, err := call.Hangup(wait)
			if err != nil {
				t.Fatalf("%s: hangup: %v", tc.name, err)
			}
			t.Logf("%s: %q, %s; hung up: %s", tc.name, final.StartLine, res.Type, closed.Param)
		} else {
			if res.Type != "CALL_CLOSED" || res.StatusCode() != tc.want {
				t.Fatalf("%s: baresip reports %s, want CALL_CLOSED with %d", tc.name, res, tc.want)
			}
			t.Logf("%s: %q, %s %q", tc.name, final.StartLine, res.Type, res.Param)
		}
		if tc.keying == "a=crypto:" {
			// SDES keys SRTP from the answer alone: baresip says so. (The
			// DTLS handshake needs media from the far end, which SIPp
			// does not send.)
			menc := false
			for _, e := range call.Events() {
				menc = menc || e.Type == "CALL_MENC"
			}
			if !menc {
				t.Fatalf("%s: no CALL_MENC event: SRTP not keyed by baresip", tc.name)
			}
		}
	}

	// umrouter identified baresip as gw1 by its client certificate, and the
	// 488 is its SRTP policy.
	if got := testutil.ToFloat64(p.m.Requests.WithLabelValues("INVITE", "gw1", "main")); got != 3 {
		t.Fatalf("INVITEs counted for gateway gw1 on plan main: %v, want 3", got)
	}
	if got := testutil.ToFloat64(p.m.Refusals.WithLabelValues("488", dialplan.ReasonSRTPRequired)); got != 1 {
		t.Fatalf("refusals counted under srtp_required: %v, want 1", got)
	}
	if st, err := uas.WaitSuccessful(2, wait); err != nil {
		t.Fatalf("SIPp backend: %v (%+v)", err, st)
	}
	if st := uas.Stop(); st.IncomingCalls != 2 || st.SuccessfulCalls != 2 || st.FailedCalls != 0 {
		t.Fatalf("SIPp backend: %d calls in, %d successful, %d failed; want exactly the 2 admitted, both completed", st.IncomingCalls, st.SuccessfulCalls, st.FailedCalls)
	}
}

// baresipAudioProto returns the transport protocol of the first m=audio line.
func baresipAudioProto(sdp string) string {
	for _, l := range strings.Split(sdp, "\n") {
		if f := strings.Fields(strings.TrimSpace(l)); len(f) >= 3 && strings.HasPrefix(f[0], "m=audio") {
			return f[2]
		}
	}
	return ""
}
