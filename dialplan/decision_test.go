package dialplan

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// sdpFile returns a body of testdata/sdp; "" is no body at all.
func sdpFile(t testing.TB, name string) []byte {
	t.Helper()
	if name == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join("testdata", "sdp", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	unsecuredPlan  = Plan{Name: "lab", Security: Unsecured, URIType: TelephoneExtension, NumberOfDigits: 5}
	sipSecuredPlan = Plan{Name: "sig", Security: SIPSecured, URIType: TelephoneExtension, NumberOfDigits: 5}
	securedPlan    = Plan{Name: "main", Security: Secured, URIType: TelephoneExtension, NumberOfDigits: 5}
)

// invite is an initial INVITE to a valid extension of the plans above.
func invite(tr Transport, body []byte) Request {
	r := Request{Method: "INVITE", Transport: tr, User: "12345", Host: "umrouter.example.com", Body: body}
	if len(body) > 0 {
		r.ContentType = "application/sdp"
	}
	return r
}

// TestDecisionMatrixSecurityByTransportBySDP is the decision matrix of an
// initial INVITE to a valid extension: one row per SDP body, one column per
// security mode and transport. "ok" is allowed, 403 is "TLS required"
// (tls_required), 488 is the row's media refusal.
func TestDecisionMatrixSecurityByTransportBySDP(t *testing.T) {
	plans := []Plan{unsecuredPlan, sipSecuredPlan, securedPlan}
	transports := []Transport{TLS, DTLS, TCP, UDP}
	rows := []struct {
		sdp    string // file in testdata/sdp, "" for a late offer
		want   string // unsecured tls dtls tcp udp | sip-secured ... | secured ...
		reason string // of the 488 cells
		warn   string // in the Warning of the 488 cells
	}{
		{"" /* late offer */, "ok ok ok ok | ok ok 403 403 | ok ok 403 403", "", ""},
		{"sdes-gateway.sdp", "ok ok ok ok | ok ok 403 403 | ok ok 403 403", "", ""},
		{"sdes-baresip.sdp", "ok ok ok ok | ok ok 403 403 | ok ok 403 403", "", ""},
		{"sdes-bad-key-length.sdp", "ok ok ok ok | ok ok 403 403 | 488 488 403 403",
			ReasonSRTPRequired, "SRTP required: m=audio a=crypto: key is 20 bytes, AES_CM_128_HMAC_SHA1_80 needs 30"},
		{"sdes-unknown-suite.sdp", "ok ok ok ok | ok ok 403 403 | 488 488 403 403",
			ReasonSRTPRequired, "SRTP required: m=audio a=crypto: unknown suite AES_CM_128_NULL_AUTH"},
		{"dtls-baresip.sdp", "ok ok ok ok | ok ok 403 403 | ok ok 403 403", "", ""},
		{"dtls-no-fingerprint.sdp", "ok ok ok ok | ok ok 403 403 | 488 488 403 403",
			ReasonSRTPRequired, "SRTP required: m=audio (UDP/TLS/RTP/SAVP) has no valid a=fingerprint"},
		{"plain-rtp-sipp.sdp", "ok ok ok ok | ok ok 403 403 | 488 488 403 403",
			ReasonSRTPRequired, "SRTP required: m=audio uses RTP/AVP"},
		{"plain-rtp-asterisk.sdp", "ok ok ok ok | ok ok 403 403 | 488 488 403 403",
			ReasonSRTPRequired, "SRTP required: m=audio uses RTP/AVP"},
		{"mixed-srtp-audio-rtp-video.sdp", "ok ok ok ok | ok ok 403 403 | 488 488 403 403",
			ReasonSRTPRequired, "SRTP required: m=video uses RTP/AVP"},
		{"video-only-srtp.sdp", "ok ok ok ok | ok ok 403 403 | ok ok 403 403", "", ""},
		{"disabled-video-port0.sdp", "ok ok ok ok | ok ok 403 403 | ok ok 403 403", "", ""},
		{"dtls-webrtc-bundle.sdp", "ok ok ok ok | ok ok 403 403 | ok ok 403 403", "", ""},
		{"dtls-bundle-only.sdp", "ok ok ok ok | ok ok 403 403 | ok ok 403 403", "", ""},
		{"bundle-only-plain-rtp.sdp", "ok ok ok ok | ok ok 403 403 | 488 488 403 403",
			ReasonSRTPRequired, "SRTP required: m=video uses RTP/AVPF"},
		{"malformed-mline-no-port.sdp", "ok ok ok ok | ok ok 403 403 | 488 488 403 403",
			ReasonMalformedSDP, "malformed SDP: line 6: m= line needs media, port, proto and a format"},
		{"malformed-no-version.sdp", "ok ok ok ok | ok ok 403 403 | 488 488 403 403",
			ReasonMalformedSDP, "malformed SDP: line 1: SDP must start with v=0"},
	}
	for _, row := range rows {
		cells := strings.Fields(strings.ReplaceAll(row.want, "|", " "))
		if len(cells) != len(plans)*len(transports) {
			t.Fatalf("row %q has %d cells", row.sdp, len(cells))
		}
		body := sdpFile(t, row.sdp)
		for i, cell := range cells {
			plan, tr := plans[i/len(transports)], transports[i%len(transports)]
			name := strings.Join([]string{string(plan.Security), string(tr), cmp(row.sdp, "late-offer")}, "/")
			t.Run(name, func(t *testing.T) {
				got := plan.Check(invite(tr, body))
				switch cell {
				case "ok":
					wantAllowed(t, got)
				case "403":
					wantRefused(t, got, 403, ReasonTLSRequired, "TLS required")
				case "488":
					wantRefused(t, got, 488, row.reason, row.warn)
				default:
					t.Fatalf("bad cell %q", cell)
				}
			})
		}
	}
}

func cmp(s, ifEmpty string) string {
	if s == "" {
		return ifEmpty
	}
	return s
}

func wantAllowed(t *testing.T, d Decision) {
	t.Helper()
	if d != (Decision{Allow: true}) {
		t.Errorf("got %+v, want allowed", d)
	}
}

func wantRefused(t *testing.T, d Decision, code int, reason, warning string) {
	t.Helper()
	if d.Allow || d.Code != code || d.Reason != reason || d.Warning != warning {
		t.Errorf("got %+v, want %d %s %q", d, code, reason, warning)
	}
}

// TestURITypeRowsUnderEverySecurityMode: the Request-URI rule is the same in
// every security mode (over TLS, with a secure offer, so that only the URI
// decides).
func TestURITypeRowsUnderEverySecurityMode(t *testing.T) {
	rows := []struct {
		uriType    URIType
		digits     int
		user, host string
		code       int // 0: allowed
	}{
		{TelephoneExtension, 5, "12345", "um.example.com", 0},
		{TelephoneExtension, 5, "1234", "um.example.com", 484},
		{TelephoneExtension, 5, "123456", "um.example.com", 404},
		{TelephoneExtension, 5, "12a45", "um.example.com", 404},
		{E164, 0, "+14255550100", "um.example.com", 0},
		{E164, 0, "14255550100", "um.example.com", 404},
		{E164, 0, "+", "um.example.com", 484},
		{E164, 0, "+1234567890123456", "um.example.com", 404},
		{SIPURI, 0, "alice", "contoso.com", 0},
		{SIPURI, 0, "", "contoso.com", 404},
		{SIPURI, 0, "alice", "", 404},
	}
	body := sdpFile(t, "sdes-gateway.sdp")
	for _, sec := range []Security{Unsecured, SIPSecured, Secured} {
		for _, row := range rows {
			name := string(sec) + "/" + string(row.uriType) + "/" + row.user + "@" + row.host
			t.Run(name, func(t *testing.T) {
				p := Plan{Name: "p", Security: sec, URIType: row.uriType, NumberOfDigits: row.digits}
				r := invite(TLS, body)
				r.User, r.Host = row.user, row.host
				got := p.Check(r)
				switch row.code {
				case 0:
					wantAllowed(t, got)
				case 404:
					if got.Allow || got.Code != 404 || got.Reason != ReasonURIInvalid {
						t.Errorf("got %+v, want 404 uri_invalid", got)
					}
				case 484:
					if got.Allow || got.Code != 484 || got.Reason != ReasonURIIncomplete {
						t.Errorf("got %+v, want 484 uri_incomplete", got)
					}
				}
			})
		}
	}
}

func TestSecuredPlanRefusesPlainRTPWith488(t *testing.T) {
	got := securedPlan.Check(invite(TLS, sdpFile(t, "plain-rtp-sipp.sdp")))
	wantRefused(t, got, 488, ReasonSRTPRequired, "SRTP required: m=audio uses RTP/AVP")
	if got.Phrase() != "Not Acceptable Here" {
		t.Errorf("phrase %q", got.Phrase())
	}
}

func TestSecuredPlanAcceptsSDESAndDTLSSRTPFromBaresip(t *testing.T) {
	for _, f := range []string{"sdes-baresip.sdp", "dtls-baresip.sdp"} {
		wantAllowed(t, securedPlan.Check(invite(TLS, sdpFile(t, f))))
	}
}

func TestSecuredPlanRefusesBestEffortSRTPBecauseTheAnswerMayBePlain(t *testing.T) {
	got := securedPlan.Check(invite(TLS, sdpFile(t, "sdes-best-effort-avp.sdp")))
	wantRefused(t, got, 488, ReasonSRTPRequired, "SRTP required: m=audio uses RTP/AVP")
}

func TestSecuredPlanRefusesT38FaxWith488(t *testing.T) {
	got := securedPlan.Check(invite(TLS, sdpFile(t, "t38-fax.sdp")))
	wantRefused(t, got, 488, ReasonSRTPRequired, "SRTP required: m=image uses udptl")
}

func TestSIPSecuredPlanAcceptsPlainRTPOverTLS(t *testing.T) {
	wantAllowed(t, sipSecuredPlan.Check(invite(TLS, sdpFile(t, "plain-rtp-asterisk.sdp"))))
}

func TestUnsecuredPlanDoesNotReadTheBody(t *testing.T) {
	r := invite(UDP, []byte("\x00\xff not sdp at all"))
	wantAllowed(t, unsecuredPlan.Check(r))
	wantAllowed(t, sipSecuredPlan.Check(invite(TLS, r.Body)))
}

func TestLateOfferIsAllowedAndTheAnswerInItsACKIsChecked(t *testing.T) {
	wantAllowed(t, securedPlan.Check(invite(TLS, nil)))

	ack := Request{Method: "ACK", Transport: TLS, User: "12345", Host: "um", InDialog: true,
		ContentType: "application/sdp", Body: sdpFile(t, "plain-rtp-sipp.sdp")}
	wantRefused(t, securedPlan.Check(ack), 488, ReasonSRTPRequired, "SRTP required: m=audio uses RTP/AVP")
	ack.Body = sdpFile(t, "sdes-gateway.sdp")
	wantAllowed(t, securedPlan.Check(ack))
}

func TestReInviteUpdateAndPRACKBodiesAreChecked(t *testing.T) {
	for _, m := range []string{"INVITE", "UPDATE", "PRACK", "ACK"} {
		r := Request{Method: m, Transport: TLS, InDialog: true, ContentType: "application/sdp",
			Body: sdpFile(t, "mixed-srtp-audio-rtp-video.sdp")}
		got := securedPlan.Check(r)
		wantRefused(t, got, 488, ReasonSRTPRequired, "SRTP required: m=video uses RTP/AVP")
	}
}

func TestBodiesOfOtherMethodsAreNotMedia(t *testing.T) {
	for _, m := range []string{"INFO", "MESSAGE", "OPTIONS", "NOTIFY", "BYE", "invite"} {
		r := Request{Method: m, Transport: TLS, InDialog: true, ContentType: "application/sdp",
			Body: sdpFile(t, "plain-rtp-sipp.sdp")}
		wantAllowed(t, securedPlan.Check(r))
	}
}

func TestInDialogRequestsACKAndCANCELSkipTheURIRule(t *testing.T) {
	for _, r := range []Request{
		{Method: "BYE", Transport: TLS, User: "gw-contact-7f3a", Host: "10.0.0.1", InDialog: true},
		{Method: "INVITE", Transport: TLS, User: "", Host: "10.0.0.1", InDialog: true},
		{Method: "ACK", Transport: TLS, User: "123", Host: "um"},
		{Method: "CANCEL", Transport: TLS, User: "123", Host: "um"},
	} {
		wantAllowed(t, securedPlan.Check(r))
	}
	got := securedPlan.Check(Request{Method: "OPTIONS", Transport: TLS, User: "123", Host: "um"})
	wantRefused(t, got, 484, ReasonURIIncomplete, "extension incomplete: 5 digits expected")
}

func TestTransportIsJudgedBeforeTheURIAndTheURIBeforeTheMedia(t *testing.T) {
	plain := sdpFile(t, "plain-rtp-sipp.sdp")
	r := invite(TCP, plain)
	r.User = "12"
	wantRefused(t, securedPlan.Check(r), 403, ReasonTLSRequired, "TLS required")
	r.Transport = TLS
	wantRefused(t, securedPlan.Check(r), 484, ReasonURIIncomplete, "extension incomplete: 5 digits expected")
	r.User = "12345"
	wantRefused(t, securedPlan.Check(r), 488, ReasonSRTPRequired, "SRTP required: m=audio uses RTP/AVP")
}

func TestRefusedACKOverPlainTransportIsStillATLSRefusal(t *testing.T) {
	got := sipSecuredPlan.Check(Request{Method: "ACK", Transport: UDP, InDialog: true})
	wantRefused(t, got, 403, ReasonTLSRequired, "TLS required")
}

func TestAnswersInResponsesAreCheckedWithCheckMedia(t *testing.T) {
	got := securedPlan.CheckMedia("application/sdp", sdpFile(t, "plain-rtp-asterisk.sdp"))
	wantRefused(t, got, 488, ReasonSRTPRequired, "SRTP required: m=audio uses RTP/AVP")
	wantAllowed(t, securedPlan.CheckMedia("application/sdp", sdpFile(t, "dtls-webrtc-bundle.sdp")))
	wantAllowed(t, sipSecuredPlan.CheckMedia("application/sdp", sdpFile(t, "plain-rtp-asterisk.sdp")))
}

func TestZeroPlanAndUnknownSecurityFailClosed(t *testing.T) {
	for _, p := range []Plan{{}, {Security: "paranoid"}} {
		if !p.RequiresTLS() || !p.RequiresSRTP() {
			t.Errorf("%+v: RequiresTLS %v RequiresSRTP %v, want both", p, p.RequiresTLS(), p.RequiresSRTP())
		}
		wantRefused(t, p.CheckTransport(UDP), 403, ReasonTLSRequired, "TLS required")
	}
}

func TestRequiresTLSAndSRTPPerSecurityMode(t *testing.T) {
	for _, c := range []struct {
		p         Plan
		tls, srtp bool
	}{{unsecuredPlan, false, false}, {sipSecuredPlan, true, false}, {securedPlan, true, true}} {
		if c.p.RequiresTLS() != c.tls || c.p.RequiresSRTP() != c.srtp {
			t.Errorf("%s: RequiresTLS %v RequiresSRTP %v", c.p.Security, c.p.RequiresTLS(), c.p.RequiresSRTP())
		}
	}
}

func TestOnlyTLSAndDTLSAreSecureTransportsWhateverTheirCase(t *testing.T) {
	for tr, want := range map[Transport]bool{
		"tls": true, "TLS": true, "dtls": true, "DTLS": true,
		"tcp": false, "udp": false, "UDP": false, "ws": false, "wss": false, "sctp": false, "": false,
	} {
		if tr.Secure() != want {
			t.Errorf("Transport(%q).Secure() = %v", tr, !want)
		}
	}
}

func TestWarningsAreSafeToQuoteEvenWhenTheyNameHostileTokens(t *testing.T) {
	for _, body := range []string{
		"v=0\r\nm=au\"d\\io\x01\xff 4000 RTP/\"AV\x7fP 0\r\n", // a stream with hostile tokens
		"v=0\r\n\"=\\\x00\xfe\r\n",                            // a line with hostile bytes
	} {
		d := securedPlan.CheckMedia("application/sdp", []byte(body))
		if d.Allow {
			t.Fatalf("%q allowed", body)
		}
		assertQuotable(t, d.Warning)
	}
	long := []byte("v=0\r\nm=audio 4000 " + strings.Repeat("X", 500) + " 0\r\n")
	d := securedPlan.CheckMedia("application/sdp", long)
	assertQuotable(t, d.Warning)
	if len(d.Warning) > 120 {
		t.Errorf("warning of %d bytes", len(d.Warning))
	}
}

func assertQuotable(t testing.TB, s string) {
	t.Helper()
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			t.Fatalf("warning %q has byte %#x at %d", s, c, i)
		}
	}
}

func TestEveryReasonIsListedAndEveryRefusalHasAPhrase(t *testing.T) {
	reasons := Reasons()
	decisions := []Decision{
		securedPlan.CheckTransport(UDP),
		securedPlan.CheckURI("1", ""),
		securedPlan.CheckURI("x", ""),
		securedPlan.CheckMedia("application/sdp", sdpFile(t, "plain-rtp-sipp.sdp")),
		securedPlan.CheckMedia("application/sdp", sdpFile(t, "malformed-truncated.sdp")),
		securedPlan.CheckMedia("multipart/mixed", []byte("x")),
	}
	_, d := Resolve(nil, "", nil, "5000")
	decisions = append(decisions, d)
	_, d = Resolve(nil, "gone", nil, "5000")
	decisions = append(decisions, d)
	seen := map[string]bool{}
	for _, d := range decisions {
		if d.Allow || !slices.Contains(reasons, d.Reason) || d.Phrase() == "" {
			t.Errorf("%+v: not a listed refusal with a phrase", d)
		}
		seen[d.Reason] = true
	}
	if len(seen) != len(reasons) {
		t.Errorf("refusals seen %v, reasons listed %v", seen, reasons)
	}
	if (Decision{Allow: true}).Phrase() != "" {
		t.Error("allowed decision has a phrase")
	}
	for _, r := range reasons {
		if r != strings.ToLower(r) || strings.ContainsAny(r, " -") {
			t.Errorf("reason %q is not snake_case", r)
		}
	}
}
