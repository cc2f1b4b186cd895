package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// uasPeer is a UDP socket that talks to an in-process uas like a proxy.
type uasPeer struct {
	t  *testing.T
	pc *net.UDPConn
	u  *uas
}

func newUASPeer(t *testing.T) *uasPeer {
	t.Helper()
	u, err := listenUAS(uasConfig{listen: "127.0.0.1:0", readers: 1, buffer: 1 << 20, dur: time.Minute, maxCalls: 100})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { u.serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	pc, err := net.DialUDP("udp", nil, u.pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return &uasPeer{t: t, pc: pc, u: u}
}

func (p *uasPeer) send(method string, cseq int, toTag string) {
	p.t.Helper()
	to := "<sip:12345@uas>"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	var body []byte
	if method == "INVITE" {
		body = sdpOffer("127.0.0.1", false)
	}
	b := appendRequest(nil, &requestParams{
		method: method, ruri: "sip:12345@uas", via: "SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK" + method,
		from: "<sip:gw@p>;tag=f", to: to, callID: "call-1", cseq: uint32(cseq), body: body,
	})
	if _, err := p.pc.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the status codes received within d.
func (p *uasPeer) recv(d time.Duration) (codes []int, toTag string) {
	buf := make([]byte, 65536)
	deadline := time.Now().Add(d)
	for {
		_ = p.pc.SetReadDeadline(deadline)
		n, err := p.pc.Read(buf)
		if err != nil {
			return codes, toTag
		}
		var m message
		if err := m.parse(buf[:n]); err != nil || m.request {
			p.t.Fatalf("not a response: %q", buf[:n])
		}
		codes = append(codes, m.code)
		if len(m.toTag) > 0 {
			toTag = string(m.toTag)
		}
	}
}

func TestUASAnswersACallAndRetransmits200UntilACK(t *testing.T) {
	p := newUASPeer(t)
	p.send("INVITE", 1, "")
	codes, tag := p.recv(1200 * time.Millisecond) // 180, 200, then the 200 again at 500 ms and 1.5 s
	if len(codes) < 3 || codes[0] != 180 || codes[1] != 200 || codes[2] != 200 {
		t.Fatalf("got %v, want 180, 200 and a retransmitted 200", codes)
	}
	if !strings.HasPrefix(tag, "uas") {
		t.Fatalf("To tag %q", tag)
	}
	p.send("ACK", 1, tag)
	p.send("BYE", 2, tag)
	p.send("BYE", 2, tag) // a retransmission is answered 200 too
	if codes, _ := p.recv(300 * time.Millisecond); len(codes) != 2 || codes[0] != 200 || codes[1] != 200 {
		t.Fatalf("BYE answers %v, want 200 200", codes)
	}
	if p.u.byeBeforeAck.Load() != 0 || p.u.byeRetrans.Load() != 1 {
		t.Errorf("bye before ack %d, retransmissions %d", p.u.byeBeforeAck.Load(), p.u.byeRetrans.Load())
	}
}

func TestUASCountsBYEBeforeACK(t *testing.T) {
	p := newUASPeer(t)
	p.send("INVITE", 1, "")
	_, tag := p.recv(200 * time.Millisecond)
	p.send("BYE", 2, tag)
	p.send("ACK", 1, tag)
	p.recv(200 * time.Millisecond)
	if n := p.u.byeBeforeAck.Load(); n != 1 {
		t.Errorf("byeBeforeAck = %d, want 1", n)
	}
}
