package baresiptest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/testpki"
)

func TestReadNetstring(t *testing.T) {
	r := bufio.NewReader(strings.NewReader(`5:hello,0:,11:{"event":1},3:abc;`))
	for _, want := range []string{"hello", "", `{"event":1}`} {
		got, err := readNetstring(r)
		if err != nil || string(got) != want {
			t.Fatalf("readNetstring = %q, %v; want %q", got, err, want)
		}
	}
	if _, err := readNetstring(r); err == nil {
		t.Fatal("a frame not ended by ',' was accepted")
	}
	if _, err := readNetstring(bufio.NewReader(strings.NewReader("99999999:x,"))); err == nil {
		t.Fatal("an oversized length was accepted")
	}
}

func TestEventStatusCode(t *testing.T) {
	for param, want := range map[string]int{
		"488 Not Acceptable Here":  488,
		"Connection reset by user": 0,
		"":                         0,
		"42 things":                0,
	} {
		if got := (Event{Param: param}).StatusCode(); got != want {
			t.Errorf("StatusCode(%q) = %d, want %d", param, got, want)
		}
	}
}

func TestParseTrace(t *testing.T) {
	sdp := "v=0\r\nm=audio 1 RTP/SAVP 0\r\n"
	log := "call: connecting\n\x1b[36;1m#\nTLS 127.0.0.1:1 -> 127.0.0.1:2\n" +
		"INVITE sip:12345@127.0.0.1:2;transport=tls SIP/2.0\r\nCall-ID: abc\r\nCSeq: 7 INVITE\r\n" +
		"Content-Type: application/sdp\r\nContent-Length: " + strconv.Itoa(len(sdp)) + "\r\n\r\n" + sdp +
		"\x1b[;m\n\x1b[36;1m#\nTLS 127.0.0.1:2 -> 127.0.0.1:1\n" +
		"SIP/2.0 488 Not Acceptable Here\r\ni: abc\r\nCSeq: 7 INVITE\r\nl: 0\r\n\r\n\x1b[;m\n" +
		"SIP/2.0 200 OK\r\nCall-ID: incomplete\r\n" // still being written
	msgs := parseTrace(log)
	if len(msgs) != 2 {
		t.Fatalf("parsed %d messages, want 2: %+v", len(msgs), msgs)
	}
	inv, res := msgs[0], msgs[1]
	if inv.IsResponse() || inv.Method() != "INVITE" || inv.Header("call-id") != "abc" || inv.Body != sdp {
		t.Fatalf("INVITE parsed as %+v", inv)
	}
	if !res.IsResponse() || res.StatusCode() != 488 || res.Method() != "INVITE" || res.Header("Call-ID") != "abc" || res.Body != "" {
		t.Fatalf("response parsed as %+v", res)
	}
}

// TestPresentsClientCertificateAndReportsFinalResponse runs baresip
// against a Go TLS server that requires a client certificate: baresip
// presents the configured one, offers SDES-SRTP, and reports the server's
// 488 both as a CALL_CLOSED event and in its SIP trace.
func TestPresentsClientCertificateAndReportsFinalResponse(t *testing.T) {
	Binary(t)
	dir := t.TempDir()
	ca := testpki.NewCA(t, "baresiptest CA")
	srv := ca.Issue(t, testpki.LeafOptions{CN: "server", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	gw := ca.Issue(t, testpki.LeafOptions{CN: "gw.example.test", DNS: []string{"gw.example.test"}})
	gwCert, gwKey := gw.WriteFiles(t, dir, "gw")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{srv.TLS},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	type result struct {
		peerCN string
		invite *textproto.MIMEHeader
		body   string
		err    error
	}
	results := make(chan result, 1)
	go func() {
		var r result
		defer func() { results <- r }()
		c, err := ln.Accept()
		if err != nil {
			r.err = err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		tc := c.(*tls.Conn)
		if r.err = tc.Handshake(); r.err != nil {
			return
		}
		if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
			r.peerCN = pc[0].Subject.CommonName
		}
		tr := textproto.NewReader(bufio.NewReader(tc))
		line, err := tr.ReadLine()
		if err != nil {
			r.err = err
			return
		}
		if !strings.HasPrefix(line, "INVITE ") {
			r.err = fmt.Errorf("first request %q", line)
			return
		}
		h, err := tr.ReadMIMEHeader()
		if err != nil {
			r.err = err
			return
		}
		r.invite = &h
		n, _ := strconv.Atoi(h.Get("Content-Length"))
		body := make([]byte, n)
		if _, r.err = io.ReadFull(tr.R, body); r.err != nil {
			return
		}
		r.body = string(body)
		resp := "SIP/2.0 488 Not Acceptable Here\r\n"
		for _, v := range h.Values("Via") {
			resp += "Via: " + v + "\r\n"
		}
		resp += "From: " + h.Get("From") + "\r\nTo: " + h.Get("To") + ";tag=srv1\r\nCall-ID: " + h.Get("Call-Id") +
			"\r\nCSeq: " + h.Get("Cseq") + "\r\nContent-Length: 0\r\n\r\n"
		if _, r.err = tc.Write([]byte(resp)); r.err != nil {
			return
		}
		// Wait for the ACK so that baresip's transaction ends normally.
		for {
			l, err := tr.ReadLine()
			if err != nil || strings.HasPrefix(l, "ACK ") {
				return
			}
		}
	}()

	const aor = "sip:alice@gw.example.test"
	b := Start(t, Options{
		CertFile: gwCert, KeyFile: gwKey, CAFile: ca.WriteCAFile(t, dir),
		Accounts: []Account{{AOR: aor, MediaEnc: MediaEncSDES}},
		SIPTrace: true,
	})
	call, err := b.Dial(aor, fmt.Sprintf("sip:12345@%s;transport=tls", ln.Addr()), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := call.Wait(15 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != "CALL_CLOSED" || ev.StatusCode() != 488 {
		t.Fatalf("baresip reports %s, want CALL_CLOSED 488", ev)
	}
	final, err := call.FinalResponse(10 * time.Second)
	if err != nil || final.StatusCode() != 488 {
		t.Fatalf("final response in the trace: %q, %v", final.StartLine, err)
	}
	var r result
	select {
	case r = <-results:
	case <-time.After(20 * time.Second):
		t.Fatal("server goroutine did not finish")
	}
	if r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	if r.peerCN != "gw.example.test" {
		t.Fatalf("client certificate CN %q, want gw.example.test", r.peerCN)
	}
	if got := r.invite.Get("Call-Id"); got != call.ID {
		t.Fatalf("server saw Call-ID %q, baresip reported %q", got, call.ID)
	}
	if !strings.Contains(r.body, " RTP/SAVP ") || !strings.Contains(r.body, "a=crypto:") {
		t.Fatalf("offer is not SDES-SRTP:\n%s", r.body)
	}
}

// TestStartRetriesWhenControlPortTaken: ctrl_tcp cannot listen on a port
// that another process holds, baresip keeps running without it, and Start
// notices from its output and starts again on another port.
func TestStartRetriesWhenControlPortTaken(t *testing.T) {
	Binary(t)
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	first := true
	orig := freePort
	t.Cleanup(func() { freePort = orig })
	freePort = func(network string) (int, error) {
		if first {
			first = false
			return taken.Addr().(*net.TCPAddr).Port, nil
		}
		return orig(network)
	}
	dir := t.TempDir()
	ca := testpki.NewCA(t, "baresiptest CA")
	gw := ca.Issue(t, testpki.LeafOptions{CN: "gw"})
	cert, key := gw.WriteFiles(t, dir, "gw")
	b := Start(t, Options{CertFile: cert, KeyFile: key, Accounts: []Account{{AOR: "sip:a@gw.example.test"}},
		StartTimeout: time.Minute}) // generous: a missed detection waits it out
	if b.ctrlPort == taken.Addr().(*net.TCPAddr).Port {
		t.Fatal("Start returned on the taken port")
	}
	if r, err := b.Command("uafind", "sip:nobody@gw.example.test", 5*time.Second); err != nil || r.OK {
		t.Fatalf("uafind of an unknown account: %+v, %v; want ok=false", r, err)
	}
}
