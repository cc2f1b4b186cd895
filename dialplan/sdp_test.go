package dialplan

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// corpusVerdicts is the verdict on every file of testdata/sdp: "secure",
// "malformed", or the reason of an insecure one. A file added to the corpus
// must be classified here.
var corpusVerdicts = map[string]string{
	"all-streams-disabled.sdp":       "secure",
	"bundle-only-plain-rtp.sdp":      "SRTP required: m=video uses RTP/AVPF",
	"disabled-video-port0.sdp":       "secure",
	"dtls-baresip.sdp":               "secure",
	"dtls-bundle-only.sdp":           "secure",
	"dtls-datachannel.sdp":           "secure",
	"dtls-md5-fingerprint.sdp":       "SRTP required: m=audio (UDP/TLS/RTP/SAVP) has no valid a=fingerprint",
	"dtls-no-fingerprint.sdp":        "SRTP required: m=audio (UDP/TLS/RTP/SAVP) has no valid a=fingerprint",
	"dtls-webrtc-bundle.sdp":         "secure",
	"malformed-mline-no-port.sdp":    "malformed",
	"malformed-no-version.sdp":       "malformed",
	"malformed-not-sdp.sdp":          "malformed",
	"malformed-port-range.sdp":       "malformed",
	"malformed-truncated.sdp":        "malformed",
	"mixed-srtp-audio-rtp-video.sdp": "SRTP required: m=video uses RTP/AVP",
	"plain-rtp-asterisk.sdp":         "SRTP required: m=audio uses RTP/AVP",
	"plain-rtp-sipp.sdp":             "SRTP required: m=audio uses RTP/AVP",
	"sdes-aes256-lifetime-mki.sdp":   "secure",
	"sdes-bad-key-length.sdp":        "SRTP required: m=audio a=crypto: key is 20 bytes, AES_CM_128_HMAC_SHA1_80 needs 30",
	"sdes-baresip.sdp":               "secure",
	"sdes-best-effort-avp.sdp":       "SRTP required: m=audio uses RTP/AVP",
	"sdes-gateway.sdp":               "secure",
	"sdes-session-level-crypto.sdp":  "SRTP required: m=audio (RTP/SAVP) has no a=crypto",
	"sdes-unencrypted-srtp.sdp":      "SRTP required: m=audio a=crypto: UNENCRYPTED_SRTP turns protection off",
	"sdes-unknown-suite.sdp":         "SRTP required: m=audio a=crypto: unknown suite AES_CM_128_NULL_AUTH",
	"t38-fax.sdp":                    "SRTP required: m=image uses udptl",
	"video-only-srtp.sdp":            "secure",
}

func corpusFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "sdp", "*.sdp"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no seed corpus: %v", err)
	}
	return files
}

func verdict(secure bool, reason string, err error) string {
	switch {
	case err != nil:
		return "malformed"
	case secure:
		return "secure"
	}
	return reason
}

func TestEverySeedCorpusBodyHasItsVerdict(t *testing.T) {
	files := corpusFiles(t)
	for _, f := range files {
		name := filepath.Base(f)
		want, ok := corpusVerdicts[name]
		if !ok {
			t.Errorf("%s: no verdict in corpusVerdicts", name)
			continue
		}
		b := sdpFile(t, name)
		if got := verdict(CheckSDP(b)); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
		// Line endings do not matter: the same verdict with bare LF.
		if got := verdict(CheckSDP(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")))); got != want {
			t.Errorf("%s with LF: got %q, want %q", name, got, want)
		}
	}
	if len(files) != len(corpusVerdicts) {
		t.Errorf("%d files, %d verdicts", len(files), len(corpusVerdicts))
	}
}

// sdp builds a body from lines, CRLF-terminated.
func sdp(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n")
}

// b64 is a base64 key of n bytes.
func b64(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa5}, n)) }

// hexFP is a fingerprint of n bytes.
func hexFP(n int) string { return strings.TrimSuffix(strings.Repeat("4A:", n), ":") }

var (
	key30 = b64(30)
	fp256 = "sha-256 " + hexFP(32)
)

func TestSessionLevelCryptoDoesNotCount(t *testing.T) {
	secure, reason, err := CheckSDP(sdp("v=0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+key30,
		"m=audio 4000 RTP/SAVP 0"))
	if secure || err != nil || reason != "SRTP required: m=audio (RTP/SAVP) has no a=crypto" {
		t.Errorf("got %v %q %v", secure, reason, err)
	}
}

func TestSessionLevelFingerprintCountsForEveryDTLSStream(t *testing.T) {
	secure, reason, err := CheckSDP(sdp("v=0", "a=fingerprint:"+fp256,
		"m=audio 4000 UDP/TLS/RTP/SAVPF 0", "m=video 4002 UDP/TLS/RTP/SAVPF 96"))
	if !secure || err != nil {
		t.Errorf("got %v %q %v", secure, reason, err)
	}
}

func TestDisabledStreamWithPortZeroNeedsNoSRTP(t *testing.T) {
	for _, body := range [][]byte{
		sdp("v=0", "m=audio 4000 RTP/SAVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+key30, "m=video 0 RTP/AVP 96"),
		sdp("v=0", "m=audio 0 RTP/AVP 0", "m=image 0 udptl t38"),
		sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0"), // no stream at all
	} {
		if secure, reason, err := CheckSDP(body); !secure || err != nil {
			t.Errorf("%q: got %v %q %v", body, secure, reason, err)
		}
	}
}

func TestInactiveDirectionDoesNotExemptAStream(t *testing.T) {
	secure, _, _ := CheckSDP(sdp("v=0", "m=audio 4000 RTP/AVP 0", "a=inactive"))
	if secure {
		t.Error("a=inactive RTP stream accepted")
	}
}

func TestBundledStreamsTakeTheKeyingOfTheTaggedStream(t *testing.T) {
	rows := []struct {
		name string
		body []byte
		want string
	}{
		{"bundle-only DTLS stream inherits the tagged fingerprint", sdp("v=0", "a=group:BUNDLE a v",
			"m=audio 4000 UDP/TLS/RTP/SAVPF 0", "a=mid:a", "a=fingerprint:"+fp256,
			"m=video 0 UDP/TLS/RTP/SAVPF 96", "a=mid:v", "a=bundle-only"), "secure"},
		{"bundled SDES stream inherits the tagged crypto", sdp("v=0", "a=group:BUNDLE a v",
			"m=audio 4000 RTP/SAVPF 0", "a=mid:a", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+key30,
			"m=video 4000 RTP/SAVPF 96", "a=mid:v"), "secure"},
		{"the tagged stream is the first mid listed, not the first m= line", sdp("v=0", "a=group:BUNDLE v a",
			"m=audio 4000 RTP/SAVPF 0", "a=mid:a", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+key30,
			"m=video 4000 RTP/SAVPF 96", "a=mid:v"), "SRTP required: m=video (RTP/SAVPF) has no a=crypto"},
		{"bundle-only plain RTP is active and refused", sdp("v=0", "a=group:BUNDLE a v",
			"m=audio 4000 UDP/TLS/RTP/SAVPF 0", "a=mid:a", "a=fingerprint:"+fp256,
			"m=video 0 RTP/AVP 96", "a=mid:v", "a=bundle-only"), "SRTP required: m=video uses RTP/AVP"},
		{"no inheritance across kinds", sdp("v=0", "a=group:BUNDLE a v",
			"m=audio 4000 UDP/TLS/RTP/SAVPF 0", "a=mid:a", "a=fingerprint:"+fp256,
			"m=video 4000 RTP/SAVPF 96", "a=mid:v"), "SRTP required: m=video (RTP/SAVPF) has no a=crypto"},
		{"no inheritance from a disabled tagged stream", sdp("v=0", "a=group:BUNDLE a v",
			"m=audio 0 RTP/SAVP 0", "a=mid:a", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+key30,
			"m=video 4000 RTP/SAVP 96", "a=mid:v"), "SRTP required: m=video (RTP/SAVP) has no a=crypto"},
		{"no inheritance outside the group", sdp("v=0", "a=group:BUNDLE a",
			"m=audio 4000 RTP/SAVP 0", "a=mid:a", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+key30,
			"m=video 4000 RTP/SAVP 96", "a=mid:v"), "SRTP required: m=video (RTP/SAVP) has no a=crypto"},
		{"a group other than BUNDLE gives nothing", sdp("v=0", "a=group:LS a v",
			"m=audio 4000 RTP/SAVP 0", "a=mid:a", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+key30,
			"m=video 4000 RTP/SAVP 96", "a=mid:v"), "SRTP required: m=video (RTP/SAVP) has no a=crypto"},
		{"a bundle-only stream without keying in no group is refused", sdp("v=0",
			"m=audio 4000 UDP/TLS/RTP/SAVPF 0", "a=fingerprint:"+fp256,
			"m=video 0 UDP/TLS/RTP/SAVPF 96", "a=bundle-only"),
			"SRTP required: m=video (UDP/TLS/RTP/SAVPF) has no valid a=fingerprint"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			if got := verdict(CheckSDP(row.body)); got != row.want {
				t.Errorf("got %q, want %q", got, row.want)
			}
		})
	}
}

func TestCryptoLineRules(t *testing.T) {
	rows := []struct {
		crypto string // a=crypto value
		want   string // "" valid, else the problem in the refusal
	}{
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30), ""},
		{"1 AES_CM_128_HMAC_SHA1_32 inline:" + b64(30), ""},
		{"1 F8_128_HMAC_SHA1_80 inline:" + b64(30), ""},
		{"1 AES_192_CM_HMAC_SHA1_80 inline:" + b64(38), ""},
		{"1 AES_192_CM_HMAC_SHA1_32 inline:" + b64(38), ""},
		{"1 AES_256_CM_HMAC_SHA1_80 inline:" + b64(46), ""},
		{"1 AES_256_CM_HMAC_SHA1_32 inline:" + b64(46), ""},
		{"1 AEAD_AES_128_GCM inline:" + b64(28), ""},
		{"1 AEAD_AES_256_GCM inline:" + b64(44), ""},
		{"1 aes_cm_128_hmac_sha1_80 INLINE:" + b64(30), ""},
		{"1 AES_256_CM_HMAC_SHA1_80 inline:" + strings.TrimRight(b64(46), "="), ""},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|2^20", ""},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|1048576", ""},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|1:4", ""},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|2^20|1:4", ""},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|2^20|1:4;inline:" + b64(30) + "|2^20|2:4", ""},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + " KDR=1 FEC_ORDER=FEC_SRTP", ""},
		{"123456789 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30), ""},

		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(29), "key is 29 bytes, AES_CM_128_HMAC_SHA1_80 needs 30"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(31), "key is 31 bytes, AES_CM_128_HMAC_SHA1_80 needs 30"},
		{"1 AES_256_CM_HMAC_SHA1_80 inline:" + b64(30), "key is 30 bytes, AES_256_CM_HMAC_SHA1_80 needs 46"},
		{"1 AES_192_CM_HMAC_SHA1_80 inline:" + b64(46), "key is 46 bytes, AES_192_CM_HMAC_SHA1_80 needs 38"},
		{"1 AEAD_AES_128_GCM inline:" + b64(30), "key is 30 bytes, AEAD_AES_128_GCM needs 28"},
		{"1 AEAD_AES_256_GCM inline:" + b64(46), "key is 46 bytes, AEAD_AES_256_GCM needs 44"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(200), "key is 200 bytes, AES_CM_128_HMAC_SHA1_80 needs 30"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + ";inline:" + b64(20), "key is 20 bytes, AES_CM_128_HMAC_SHA1_80 needs 30"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:****" + b64(30)[4:], "inline key is not base64"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:", "inline key is not base64"},
		{"1 AES_CM_128_HMAC_SHA1_80 uri:https://kms.example.com/k1", "key method is not inline"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|forever", "bad lifetime or MKI"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|1:", "bad lifetime or MKI"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + "|2^20|x:4", "bad lifetime or MKI"},
		{"1 SEED_CTR_128_HMAC_SHA1_80 inline:" + b64(30), "unknown suite SEED_CTR_128_HMAC_SHA1_80"},
		{"1 NULL_HMAC_SHA1_80 inline:" + b64(30), "unknown suite NULL_HMAC_SHA1_80"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + " UNENCRYPTED_SRTCP", "UNENCRYPTED_SRTCP turns protection off"},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30) + " UNAUTHENTICATED_SRTP", "UNAUTHENTICATED_SRTP turns protection off"},
		{"x AES_CM_128_HMAC_SHA1_80 inline:" + b64(30), "malformed line"},
		{"1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + b64(30), "malformed line"},
		{"1 AES_CM_128_HMAC_SHA1_80", "malformed line"},
		{"", "malformed line"},
	}
	for _, row := range rows {
		body := sdp("v=0", "m=audio 4000 RTP/SAVP 0", "a=crypto:"+row.crypto)
		want := "secure"
		if row.want != "" {
			want = "SRTP required: m=audio a=crypto: " + row.want
		}
		if got := verdict(CheckSDP(body)); got != want {
			t.Errorf("a=crypto:%s\n got %q\nwant %q", row.crypto, got, want)
		}
	}
}

func TestOneValidCryptoLineAmongOthersIsEnough(t *testing.T) {
	secure, reason, err := CheckSDP(sdp("v=0", "m=audio 4000 RTP/SAVP 0",
		"a=crypto:1 AES_CM_128_NULL_AUTH inline:"+key30,
		"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"+b64(12),
		"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:"+key30))
	if !secure || err != nil {
		t.Errorf("got %v %q %v", secure, reason, err)
	}
	// All invalid: the first problem is named.
	_, reason, _ = CheckSDP(sdp("v=0", "m=audio 4000 RTP/SAVP 0",
		"a=crypto:1 AES_CM_128_NULL_AUTH inline:"+key30,
		"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"+b64(12)))
	if reason != "SRTP required: m=audio a=crypto: unknown suite AES_CM_128_NULL_AUTH" {
		t.Errorf("reason %q", reason)
	}
}

func TestFingerprintRules(t *testing.T) {
	rows := []struct {
		fp    string
		valid bool
	}{
		{"sha-1 " + hexFP(20), true},
		{"sha-224 " + hexFP(28), true},
		{"sha-256 " + hexFP(32), true},
		{"sha-384 " + hexFP(48), true},
		{"sha-512 " + hexFP(64), true},
		{"SHA-256 " + strings.ToLower(hexFP(32)), true},
		{"sha-256 " + hexFP(32) + " ", true},
		{"sha-256 " + hexFP(20), false},
		{"sha-1 " + hexFP(32), false},
		{"md5 " + hexFP(16), false},
		{"md2 " + hexFP(16), false},
		{"sha-256 " + strings.Replace(hexFP(32), "4A", "4G", 1), false},
		{"sha-256 " + strings.Replace(hexFP(32), ":", "-", 1), false},
		{"sha-256 " + hexFP(32) + " trailing", false},
		{"sha-256", false},
		{"", false},
	}
	for _, row := range rows {
		body := sdp("v=0", "m=audio 4000 UDP/TLS/RTP/SAVP 0", "a=fingerprint:"+row.fp)
		secure, reason, err := CheckSDP(body)
		if secure != row.valid || err != nil {
			t.Errorf("a=fingerprint:%s: got %v %q %v", row.fp, secure, reason, err)
		}
	}
}

func TestSecureProtocolsAndTheirKeying(t *testing.T) {
	crypto := "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + key30
	rows := []struct {
		proto, keying string
		secure        bool
	}{
		{"RTP/SAVP", crypto, true},
		{"RTP/SAVPF", crypto, true},
		{"rtp/savp", crypto, true},
		{"RTP/SAVP", "a=fingerprint:" + fp256, false},
		{"UDP/TLS/RTP/SAVP", "a=fingerprint:" + fp256, true},
		{"UDP/TLS/RTP/SAVPF", "a=fingerprint:" + fp256, true},
		{"TCP/DTLS/RTP/SAVP", "a=fingerprint:" + fp256, true},
		{"TCP/DTLS/RTP/SAVPF", "a=fingerprint:" + fp256, true},
		{"UDP/DTLS/SCTP", "a=fingerprint:" + fp256, true},
		{"TCP/DTLS/SCTP", "a=fingerprint:" + fp256, true},
		{"DTLS/SCTP", "a=fingerprint:" + fp256, true},
		{"UDP/TLS/UDPTL", "a=fingerprint:" + fp256, true},
		{"UDP/TLS/RTP/SAVP", crypto, false},
		{"RTP/AVP", crypto, false},
		{"RTP/AVPF", "a=fingerprint:" + fp256, false},
		{"udptl", "", false},
		{"TCP/MSRP", "", false},
		{"TCP/TLS/MSRP", "a=fingerprint:" + fp256, false},
	}
	for _, row := range rows {
		body := sdp("v=0", "m=audio 4000 "+row.proto+" 0", row.keying)
		if secure, reason, err := CheckSDP(body); secure != row.secure || err != nil {
			t.Errorf("%s with %q: got %v %q %v", row.proto, row.keying, secure, reason, err)
		}
	}
}

func TestMalformedSDP(t *testing.T) {
	rows := []struct {
		name string
		body []byte
		line int
	}{
		{"empty", nil, 0},
		{"only blank lines", []byte("\r\n\r\n  \r\n"), 0},
		{"no v= line", sdp("o=- 1 1 IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0"), 1},
		{"v= not 0", sdp("v=1", "m=audio 4000 RTP/AVP 0"), 1},
		{"m= without format", sdp("v=0", "m=audio 4000 RTP/AVP"), 2},
		{"m= without proto", sdp("v=0", "m=audio 4000"), 2},
		{"m= port not a number", sdp("v=0", "m=audio four RTP/AVP 0"), 2},
		{"m= port above 65535", sdp("v=0", "m=audio 65536 RTP/AVP 0"), 2},
		{"m= port negative", sdp("v=0", "m=audio -1 RTP/AVP 0"), 2},
		{"m= bad port count", sdp("v=0", "m=audio 4000/ RTP/AVP 0"), 2},
		{"m= port count not a number", sdp("v=0", "m=audio 4000/x RTP/AVP 0"), 2},
		{"line without =", sdp("v=0", "s=-", "hello", "m=audio 4000 RTP/SAVP 0"), 3},
		{"upper-case type", sdp("v=0", "M=audio 4000 RTP/AVP 0"), 2},
		{"empty m=", sdp("v=0", "m="), 2},
		{"form feed between m= fields", []byte("v=0\nm=0\f1 0 0 0"), 2},
		{"NUL in m=", sdp("v=0", "m=audio 4000\x00 RTP/AVP 0"), 2},
		{"non-ASCII space in m=", sdp("v=0", "m=audio\u00a04000 RTP/AVP 0"), 2},
		{"bare CR hides a line", sdp("v=0", "a=x\rm=audio 4000 RTP/AVP 0"), 2},
		{"bare CR splits m=", sdp("v=0", "m=audio 0 RTP/AVP 0\rm=audio 4000 RTP/AVP 0"), 2},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			secure, reason, err := CheckSDP(row.body)
			var se *SDPError
			if secure || reason != "" || !errors.As(err, &se) || se.Line != row.line {
				t.Errorf("got %v %q %v, want an SDPError on line %d", secure, reason, err, row.line)
			}
		})
	}
}

func TestLenientReadingOfLineEndsBlankLinesAndUnknownLines(t *testing.T) {
	body := []byte("\r\nv=0  \n\no=- 1 1 IN IP4 192.0.2.1\r\nx=private\r\ns=-\r\n" +
		"m=audio  4000   RTP/SAVP 0 \t\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + key30 + "\r\n" +
		"m=video 4000/2 RTP/SAVP 96\na=crypto:7 AES_CM_128_HMAC_SHA1_32 inline:" + key30) // no final line end
	if secure, reason, err := CheckSDP(body); !secure || err != nil {
		t.Errorf("got %v %q %v", secure, reason, err)
	}
}

func TestManyMediaSectionsAreAllChecked(t *testing.T) {
	lines := []string{"v=0"}
	for i := 0; i < 40; i++ {
		lines = append(lines, "m=audio 4000 RTP/SAVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+key30)
	}
	if secure, reason, err := CheckSDP(sdp(lines...)); !secure || err != nil {
		t.Fatalf("got %v %q %v", secure, reason, err)
	}
	lines = append(lines, "m=text 4000 RTP/AVP 98")
	if _, reason, _ := CheckSDP(sdp(lines...)); reason != "SRTP required: m=text uses RTP/AVP" {
		t.Errorf("reason %q", reason)
	}
}

func TestCheckSDPDoesNotKeepOrChangeItsInput(t *testing.T) {
	b := sdpFile(t, "dtls-webrtc-bundle.sdp")
	orig := bytes.Clone(b)
	CheckSDP(b)
	if !bytes.Equal(b, orig) {
		t.Error("input changed")
	}
}

// activeProtos lists the proto of every active m= line, read by a plain
// field split: the reference the fuzz invariant compares with.
func activeProtos(body []byte) []string {
	var protos []string
	sections := strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\nm=")
	for _, s := range sections[1:] {
		lines := strings.Split(s, "\n")
		f := strings.Fields(lines[0])
		if len(f) < 3 {
			continue
		}
		bundleOnly := false
		for _, l := range lines[1:] {
			bundleOnly = bundleOnly || strings.TrimRight(l, " \t\r") == "a=bundle-only"
		}
		port, _, _ := strings.Cut(f[1], "/")
		if strings.Trim(port, "0") != "" || bundleOnly {
			protos = append(protos, f[2])
		}
	}
	return protos
}

func FuzzCheckSDP(f *testing.F) {
	for _, file := range corpusFiles(f) {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := bytes.Clone(body)
		secure, reason, err := CheckSDP(body)
		s2, r2, e2 := CheckSDP(body)
		if secure != s2 || reason != r2 || (err == nil) != (e2 == nil) || (err != nil && err.Error() != e2.Error()) {
			t.Fatalf("not deterministic: %v %q %v, then %v %q %v", secure, reason, err, s2, r2, e2)
		}
		if !bytes.Equal(body, orig) {
			t.Fatal("input changed")
		}
		switch {
		case err != nil:
			if secure || reason != "" {
				t.Fatalf("error %v with %v %q", err, secure, reason)
			}
			assertQuotable(t, err.Error())
		case secure:
			if reason != "" {
				t.Fatalf("secure with reason %q", reason)
			}
			for _, p := range activeProtos(body) {
				u := strings.ToUpper(p)
				if !strings.Contains(u, "SAVP") && !strings.Contains(u, "DTLS") && !strings.Contains(u, "TLS") {
					t.Fatalf("secure, but an active m= line uses %q", p)
				}
			}
		default:
			if !strings.HasPrefix(reason, "SRTP required: m=") {
				t.Fatalf("insecure with reason %q", reason)
			}
			assertQuotable(t, reason)
		}
	})
}

// BenchmarkCheckSDP measures a typical gateway SDES offer (414 bytes, two
// a=crypto lines).
func BenchmarkCheckSDP(b *testing.B) {
	body := sdpFile(b, "sdes-gateway.sdp")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if secure, _, _ := CheckSDP(body); !secure {
			b.Fatal("not secure")
		}
	}
}

// BenchmarkCheckSDPWebRTC measures a 2 KB WebRTC offer (BUNDLE, two
// streams, fingerprints).
func BenchmarkCheckSDPWebRTC(b *testing.B) {
	body := sdpFile(b, "dtls-webrtc-bundle.sdp")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if secure, _, _ := CheckSDP(body); !secure {
			b.Fatal("not secure")
		}
	}
}

// BenchmarkPlanCheck measures the whole decision for an initial INVITE with
// an SDES offer on a secured plan.
func BenchmarkPlanCheck(b *testing.B) {
	r := invite(TLS, sdpFile(b, "sdes-gateway.sdp"))
	b.ReportAllocs()
	for b.Loop() {
		if d := securedPlan.Check(r); !d.Allow {
			b.Fatal(d)
		}
	}
}
