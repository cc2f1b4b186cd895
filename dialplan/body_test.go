package dialplan

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func bodyFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "body", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const sipiType = "multipart/mixed;boundary=unique-boundary-1"

func TestSecuredPlanChecksTheSDPPartOfAMultipartBody(t *testing.T) {
	got := securedPlan.CheckMedia(sipiType, bodyFile(t, "multipart-sipi-plain-rtp.txt"))
	wantRefused(t, got, 488, ReasonSRTPRequired, "SRTP required: m=audio uses RTP/AVP")
	wantAllowed(t, securedPlan.CheckMedia(sipiType, bodyFile(t, "multipart-sipi-sdes.txt")))

	r := invite(TLS, bodyFile(t, "multipart-sipi-plain-rtp.txt"))
	r.ContentType = `Multipart/Mixed; boundary="unique-boundary-1"`
	wantRefused(t, securedPlan.Check(r), 488, ReasonSRTPRequired, "SRTP required: m=audio uses RTP/AVP")
}

// mp builds a multipart body with boundary "b1" from parts given as
// header block and body.
func mp(parts ...[2]string) []byte {
	var s strings.Builder
	s.WriteString("preamble, ignored\r\n")
	for _, p := range parts {
		s.WriteString("--b1\r\n" + p[0] + "\r\n\r\n" + p[1] + "\r\n")
	}
	s.WriteString("--b1--\r\nepilogue\r\n")
	return []byte(s.String())
}

func TestMultipartBodies(t *testing.T) {
	plain := string(sdpFile(t, "plain-rtp-sipp.sdp"))
	sdes := string(sdpFile(t, "sdes-gateway.sdp"))
	rows := []struct {
		name, contentType string
		body              []byte
		code              int
		reason            string
	}{
		{"no SDP part carries no media", "multipart/mixed;boundary=b1",
			mp([2]string{"Content-Type: application/isup", "\x01\x02"}, [2]string{"Content-Type: text/plain", "v=0"}), 0, ""},
		{"a part without Content-Type is text/plain", "multipart/mixed;boundary=b1",
			mp([2]string{"Content-Disposition: render", plain}), 0, ""},
		{"every SDP part is checked", "multipart/mixed;boundary=b1",
			mp([2]string{"Content-Type: application/sdp", sdes}, [2]string{"Content-Type: application/sdp", plain}), 488, ReasonSRTPRequired},
		{"compact header name and parameters in the part", "multipart/mixed;boundary=b1",
			mp([2]string{"c: application/SDP; charset=utf-8", plain}), 488, ReasonSRTPRequired},
		{"multipart/alternative nested in multipart/mixed", "multipart/mixed;boundary=b1",
			mp([2]string{"Content-Type: multipart/alternative; boundary=b2",
				"--b2\r\nContent-Type: application/sdp\r\n\r\n" + plain + "\r\n--b2--"}), 488, ReasonSRTPRequired},
		{"malformed SDP part", "multipart/mixed;boundary=b1",
			mp([2]string{"Content-Type: application/sdp", "m=audio 4000 RTP/AVP 0"}), 488, ReasonMalformedSDP},
		{"no boundary parameter", "multipart/mixed", mp([2]string{"Content-Type: application/sdp", plain}), 488, ReasonMalformedBody},
		{"boundary not in the body", "multipart/mixed;boundary=zz", mp([2]string{"Content-Type: application/sdp", plain}), 488, ReasonMalformedBody},
		{"no close delimiter", "multipart/mixed;boundary=b1",
			[]byte("--b1\r\nContent-Type: application/sdp\r\n\r\n" + plain), 488, ReasonMalformedBody},
		{"a line that only starts with the boundary is content", "multipart/mixed;boundary=b1",
			[]byte("--b1\r\nContent-Type: application/sdp\r\n\r\n" + sdes + "--b1x\r\nm=audio 5000 RTP/AVP 0\r\n--b1--"),
			488, ReasonMalformedSDP},
		{"delimiter with transport padding", "multipart/mixed;boundary=b1",
			[]byte("--b1 \t\r\nContent-Type: application/sdp\r\n\r\n" + plain + "--b1  \r\n\r\n--b1--"),
			488, ReasonSRTPRequired},
		{"two boundary parameters", "multipart/mixed;boundary=b1;boundary=b2",
			mp([2]string{"Content-Type: application/sdp", plain}), 488, ReasonMalformedBody},
		{"two Content-Type headers in a part", "multipart/mixed;boundary=b1",
			mp([2]string{"Content-Type: text/plain\r\nContent-Type: application/sdp", plain}), 488, ReasonMalformedBody},
		{"boundary longer than 70", "multipart/mixed;boundary=" + strings.Repeat("b", 71), []byte("x"), 488, ReasonMalformedBody},
		{"nested too deep", "multipart/mixed;boundary=b1",
			[]byte("--b1\r\nContent-Type: multipart/mixed;boundary=b2\r\n\r\n" +
				"--b2\r\nContent-Type: multipart/mixed;boundary=b3\r\n\r\n" +
				"--b3\r\nContent-Type: multipart/mixed;boundary=b4\r\n\r\n--b4--\r\n--b3--\r\n--b2--\r\n--b1--"),
			488, ReasonMalformedBody},
		{"two levels are fine", "multipart/mixed;boundary=b1",
			[]byte("--b1\r\nContent-Type: multipart/mixed;boundary=b2\r\n\r\n" +
				"--b2\r\nContent-Type: multipart/mixed;boundary=b3\r\n\r\n--b3--\r\n--b2--\r\n--b1--"),
			0, ""},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			got := securedPlan.CheckMedia(row.contentType, row.body)
			if row.code == 0 {
				wantAllowed(t, got)
				return
			}
			if got.Allow || got.Code != row.code || got.Reason != row.reason {
				t.Errorf("got %+v, want %d %s", got, row.code, row.reason)
			}
			assertQuotable(t, got.Warning)
		})
	}
}

func TestContentTypesThatAreNotMediaAreNotRead(t *testing.T) {
	for _, ct := range []string{"application/pidf+xml", "application/isup", "text/plain", "application/dtmf-relay", "message/sipfrag"} {
		wantAllowed(t, securedPlan.CheckMedia(ct, sdpFile(t, "plain-rtp-sipp.sdp")))
	}
}

func TestBodyWithoutContentTypeIsReadAsSDP(t *testing.T) {
	got := securedPlan.CheckMedia("", sdpFile(t, "plain-rtp-sipp.sdp"))
	wantRefused(t, got, 488, ReasonSRTPRequired, "SRTP required: m=audio uses RTP/AVP")
}

func TestSDPContentTypeIsMatchedCaseInsensitivelyWithoutItsParameters(t *testing.T) {
	for _, ct := range []string{"application/sdp", "Application/SDP", " application/sdp ; charset=utf-8"} {
		got := securedPlan.CheckMedia(ct, sdpFile(t, "plain-rtp-sipp.sdp"))
		wantRefused(t, got, 488, ReasonSRTPRequired, "SRTP required: m=audio uses RTP/AVP")
	}
}

func TestEmptyOrBlankBodyIsALateOffer(t *testing.T) {
	for _, b := range [][]byte{nil, {}, []byte("\r\n"), []byte(" \t\r\n ")} {
		wantAllowed(t, securedPlan.CheckMedia("application/sdp", b))
	}
}

func FuzzCheckMedia(f *testing.F) {
	for _, file := range []string{"multipart-sipi-plain-rtp.txt", "multipart-sipi-sdes.txt"} {
		f.Add(sipiType, bodyFile(f, file))
	}
	f.Add("multipart/alternative; boundary=\"b\"", []byte("--b\r\nc: multipart/mixed;boundary=c\r\n\r\n--c\r\n\r\n--c--\r\n--b--"))
	f.Add("application/sdp", sdpFile(f, "dtls-webrtc-bundle.sdp"))
	f.Add("", sdpFile(f, "malformed-truncated.sdp"))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		d := securedPlan.CheckMedia(contentType, body)
		if d != securedPlan.CheckMedia(contentType, body) {
			t.Fatal("not deterministic")
		}
		switch {
		case d.Allow:
			if d != (Decision{Allow: true}) {
				t.Fatalf("allowed with %+v", d)
			}
		case d.Code != 488:
			t.Fatalf("media refusal with %+v", d)
		}
		assertQuotable(t, d.Warning)
		if len(d.Warning) >= 150 {
			t.Fatalf("warning of %d bytes: %q", len(d.Warning), d.Warning)
		}
		wantAllowed(t, sipSecuredPlan.CheckMedia(contentType, body))
	})
}
