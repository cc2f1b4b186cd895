package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/umrouter/umrouter/internal/sipptest"
	"github.com/umrouter/umrouter/internal/testpki"
)

// dialFrom opens a TCP connection to addr from the loopback address src, so
// that a test can play a second host (127.0.0.2) next to a gateway.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

func TestOversizedMessageGets413AndTheConnectionCloses(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9")
	cfg.Limits.MaxMessageBytes = 4096
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	inv, _ := c.invite("12345", "X-Big: "+strings.Repeat("b", 5000)+"\r\n")
	c.send(inv)
	if r := c.response(5 * time.Second); r.StatusCode != 413 {
		t.Fatalf("want 413, got %s", r.StartLine())
	}
	if err := c.closed(5 * time.Second); err == nil {
		t.Fatal("connection still open after 413")
	}
}

func TestHeaderFloodGets400AndTheConnectionCloses(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9")
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	inv, _ := c.invite("12345", strings.Repeat("X-Flood: 1\r\n", 300))
	c.send(inv)
	if r := c.response(5 * time.Second); r.StatusCode != 400 {
		t.Fatalf("want 400, got %s", r.StartLine())
	}
	if err := c.closed(5 * time.Second); err == nil {
		t.Fatal("connection still open after 400")
	}
}

func TestSlowlorisPeerIsCutOffWhileOthersAreServed(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9")
	cfg.Limits.MessageTimeout = 300 * time.Millisecond
	p := startProxy(t, pki, cfg, plans)
	slow := p.gateway(t)
	good := p.gateway(t)
	inv, _ := slow.invite("12345")
	done := make(chan struct{})
	go func() { // trickle a byte every 50 ms, bounded
		defer close(done)
		for i := 0; i < 200 && i < len(inv); i++ {
			if _, err := slow.conn.Write([]byte{inv[i]}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	good.send(optionsTo(good, ""))
	if r := good.response(5 * time.Second); r.StatusCode != 200 {
		t.Fatalf("other gateway's OPTIONS: %s", r.StartLine())
	}
	if err := slow.closed(5 * time.Second); err == nil {
		t.Fatal("a peer trickling bytes was not cut off")
	}
	<-done
	good.send(optionsTo(good, ""))
	if r := good.response(5 * time.Second); r.StatusCode != 200 {
		t.Fatalf("other gateway's OPTIONS after the cut: %s", r.StartLine())
	}
}

func TestGatewayOverItsRequestRateGets503WithRetryAfter(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	cfg.Limits.RequestsPerSecond = 5 // bursts of 10
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	limited := 0
	for i := 0; i < 30; i++ {
		inv, _ := c.invite("12345")
		c.send(inv)
		r := c.responseTo("INVITE", 5*time.Second)
		for r.StatusCode < 200 {
			r = c.responseTo("INVITE", 5*time.Second)
		}
		if r.StatusCode == 503 {
			if r.GetHeader("Retry-After") == nil {
				t.Fatal("503 without Retry-After")
			}
			limited++
			continue
		}
		if r.StatusCode != 200 {
			t.Fatalf("call %d: %s", i, r.StartLine())
		}
		var d dialog
		d.callID = r.CallID().Value()
		d.fromTag, _ = r.From().Params.Get("tag")
		d.cseq = 1
		d.establish(r)
		c.send(c.inDialog(&d, "ACK"))
		c.send(c.inDialog(&d, "BYE")) // in-dialog requests are never limited
		if r := c.responseTo("BYE", 5*time.Second); r.StatusCode != 200 {
			t.Fatalf("BYE of an admitted call: %s", r.StartLine())
		}
	}
	if limited == 0 {
		t.Fatal("30 calls in a burst against a limit of 5/s: none refused")
	}
	// The counter moves just after the answer is written: wait for it.
	waitFor(t, fmt.Sprintf("%d rate_limited refusals counted", limited), func() bool {
		return int(testutil.ToFloat64(p.m.Refusals.WithLabelValues("503", "rate_limited"))) == limited
	})
}

// TestConnectionOverTheRateIsNotReadForAWhile: after a 503 for its
// gateway's rate, umrouter stops reading that connection for a while
// (jittered(ratePause): at least ratePause/2), so
// a flood costs it one refusal per pause instead of one per message, while
// another connection is served meanwhile.
func TestConnectionOverTheRateIsNotReadForAWhile(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	cfg.Limits.RequestsPerSecond = 1 // a burst of 2
	p := startProxy(t, pki, cfg, plans)
	flooder, other := p.gateway(t), p.gateway(t)
	var burst string
	for i := 0; i < 3; i++ {
		inv, _ := flooder.invite("12345")
		burst += inv
	}
	flooder.send(burst) // three new calls in one write: the third is over the rate
	refusedAt := awaitRateRefusal(flooder)
	// Another connection of the same gateway is read at once.
	other.send(optionsTo(other, ""))
	if r := other.response(5 * time.Second); r.StatusCode != 200 {
		t.Fatalf("OPTIONS on another connection: %s", r.StartLine())
	}
	requireReadAfterPause(t, flooder, refusedAt)
}

// awaitRateRefusal reads c's responses until the 503 of a request refused
// for its gateway's rate, and returns when it came.
func awaitRateRefusal(c *sipClient) time.Time {
	for {
		r := c.response(5 * time.Second)
		if r.StatusCode == 503 && strings.Contains(fmt.Sprint(r.GetHeader("Warning")), "rate") {
			return time.Now()
		}
	}
}

// requireReadAfterPause sends an OPTIONS on c, refused for its gateway's
// rate at refusedAt, and requires its 200 (past the answers to earlier
// requests) no sooner than the shortest pause, ratePause/2.
func requireReadAfterPause(t *testing.T, c *sipClient, refusedAt time.Time) {
	t.Helper()
	c.send(optionsTo(c, ""))
	for {
		r := c.response(5 * time.Second)
		if string(r.CSeq().MethodName) != "OPTIONS" {
			continue // the admitted calls' answers
		}
		if r.StatusCode != 200 {
			t.Fatalf("OPTIONS after the pause: %s", r.StartLine())
		}
		break
	}
	if waited := time.Since(refusedAt); waited < ratePause/2 {
		t.Fatalf("the refused %s connection was read again after %s, before its pause of at least %s", c.via, waited, ratePause/2)
	}
}

// TestGatewayOwnRequestRate: a gateway's requests_per_second replaces
// limits.requests_per_second for it alone: the small branch gateway is
// refused past its own rate while gw1, under the (unlimited) default, is
// not.
func TestGatewayOwnRequestRate(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	const branchName = "branch.example.test"
	cfg.Gateways = append(cfg.Gateways, Gateway{Name: "branch", Address: branchName, DialPlan: "main", RequestsPerSecond: 1})
	p := startProxy(t, pki, cfg, plans)
	branchLeaf := pki.ca.Issue(t, testpki.LeafOptions{CN: branchName, DNS: []string{branchName}})
	branch, err := dialGateway(t, p.tlsAddr, pki, &branchLeaf.TLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := p.gateway(t)
	codes := func(c *sipClient, n int) map[int]int {
		var burst string
		for i := 0; i < n; i++ {
			inv, _ := c.invite("12345")
			burst += inv
		}
		c.send(burst)
		got := map[int]int{}
		for finals := 0; finals < n; {
			r := c.response(5 * time.Second)
			if r.StatusCode >= 200 && string(r.CSeq().MethodName) == "INVITE" {
				got[r.StatusCode]++
				finals++
			}
		}
		return got
	}
	// A rate of 1 is a bucket of 2: the third INVITE of a burst is refused.
	if got := codes(branch, 3); got[503] != 1 || got[200] != 2 {
		t.Fatalf("branch gateway (its own rate 1/s), three INVITEs at once: %v, want two 200 and one 503", got)
	}
	if got := codes(big, 3); got[200] != 3 {
		t.Fatalf("gw1 (no limit), three INVITEs at once: %v, want three 200", got)
	}
	if got := testutil.ToFloat64(p.m.Refusals.WithLabelValues("503", "rate_limited")); got != 1 {
		t.Fatalf("rate_limited refusals: %v, want 1", got)
	}
}

// TestRatePausesAreSpread: the pauses of a flooding gateway's connections,
// all refused at the same moment, must not all end at the same moment, or
// their backlogs arrive together (see ratePause).
func TestRatePausesAreSpread(t *testing.T) {
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for range 1000 {
		d := jittered(ratePause)
		if d < ratePause/2 || d >= ratePause*3/2 {
			t.Fatalf("pause %s outside [%s, %s)", d, ratePause/2, ratePause*3/2)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	// 1000 uniform draws cover all but a sliver of the window.
	if hi-lo < ratePause*9/10 {
		t.Fatalf("1000 pauses spread over only %s (%s to %s); want most of %s", hi-lo, lo, hi, ratePause)
	}
}

func TestHandshakeFloodFromOneHostDoesNotStopAnotherGateway(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	cfg.Limits.MaxConnectionsPerPeer = 20
	cfg.Limits.HandshakeTimeout = 500 * time.Millisecond
	p := startProxy(t, pki, cfg, plans)
	// 50 connections from 127.0.0.2 that never say a word.
	for i := 0; i < 50; i++ {
		dialFrom(t, "127.0.0.2", p.tlsAddr)
	}
	waitFor(t, "30 flood connections refused at accept", func() bool {
		return testutil.ToFloat64(p.m.Handshakes.WithLabelValues("refused", "max_connections_per_peer")) >= 30
	})
	// The 20 admitted ones are handshakes in progress, waiting for their
	// peer: none computes or waits for a CPU.
	if h := p.s.Status().Handshakes; h != (HandshakeStatus{InProgress: 20}) {
		t.Fatalf("handshakes in progress during the flood: %+v, want 20 waiting for their peer", h)
	}
	c := p.gateway(t)
	if err := placeCall(c); err != nil {
		t.Fatalf("gateway call during the flood: %v", err)
	}
	waitFor(t, "stalled handshakes cut by the handshake timeout", func() bool {
		return testutil.ToFloat64(p.m.Handshakes.WithLabelValues("refused", "timeout")) >= 20
	})
	waitFor(t, "no handshake left in progress", func() bool { return p.s.Status().Handshakes == HandshakeStatus{} })
}

func TestPerPeerConnectionLimit(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9")
	cfg.Limits.MaxConnectionsPerPeer = 2
	p := startProxy(t, pki, cfg, plans)
	for i := 0; i < 2; i++ {
		c := p.gateway(t)
		c.send(optionsTo(c, ""))
		c.response(5 * time.Second)
	}
	_, err := dialGateway(t, p.tlsAddr, pki, &pki.gw.TLS, func(c *tls.Config) {})
	if err == nil {
		t.Fatal(fmt.Sprint("a third connection from the same host was accepted"))
	}
}

// A connection refused at accept is held, unread, for about refusedHold
// (at least half of it) before it is closed: a peer reconnecting in a loop waits instead of getting a
// reset at once and trying again thousands of times a second.
func TestRefusedConnectionIsHeldBeforeItIsClosed(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9") // never reached
	cfg.Limits.NewConnectionsPerSecond = 1  // bursts of 2
	p := startProxy(t, pki, cfg, plans)
	dialFrom(t, "127.0.0.4", p.tlsAddr)
	dialFrom(t, "127.0.0.4", p.tlsAddr)
	start := time.Now()
	refused := dialFrom(t, "127.0.0.4", p.tlsAddr)
	_ = refused.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := refused.Read(make([]byte, 1))
	held := time.Since(start)
	if n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("refused connection: read %d bytes, %v; want it closed", n, err)
	}
	if held < refusedHold/2-100*time.Millisecond {
		t.Fatalf("refused connection closed after %s, want it held at least %s", held, refusedHold/2)
	}
	if got := testutil.ToFloat64(p.m.Handshakes.WithLabelValues("refused", "connection_rate")); got != 1 {
		t.Fatalf("connection_rate refusals: %v, want 1", got)
	}
}

// The hold is bounded: past maxHeldRefusals, a refused connection is
// closed at once; held ones are closed when their time is up, which is not
// the same for all (see jittered), and all of them when the server
// stops.
func TestRefusalHoldIsBounded(t *testing.T) {
	var h refusalHold
	now := time.Now()
	peers := make([]net.Conn, 0, maxHeldRefusals)
	for i := 0; i < maxHeldRefusals; i++ {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		if !h.hold(a, now) {
			t.Fatalf("hold refused connection %d of %d", i+1, maxHeldRefusals)
		}
		peers = append(peers, b)
	}
	extra, extraPeer := net.Pipe()
	defer extra.Close()
	_ = extraPeer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if h.hold(extra, now) {
		t.Fatal("the hold took a connection beyond maxHeldRefusals")
	}
	h.closeDue(now.Add(refusedHold/2-time.Nanosecond), false)
	if len(h.conns) != maxHeldRefusals {
		t.Fatalf("%d held before the shortest hold ends, want %d", len(h.conns), maxHeldRefusals)
	}
	// Refused at the same instant, they are not all released at the same
	// instant: at the mean hold about half are still held.
	h.closeDue(now.Add(refusedHold), false)
	if n := len(h.conns); n < maxHeldRefusals/4 || n > maxHeldRefusals*3/4 {
		t.Fatalf("%d of %d held at the mean hold, want about half", n, maxHeldRefusals)
	}
	h.closeDue(now.Add(refusedHold*3/2), false)
	if len(h.conns) != 0 {
		t.Fatalf("%d held once their time is up, want 0", len(h.conns))
	}
	if !h.hold(extra, now.Add(refusedHold*3/2)) {
		t.Fatal("the hold stays full after its connections were closed")
	}
	for i, b := range peers {
		_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := b.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("held connection %d not closed: %v", i, err)
		}
	}
	h.closeDue(time.Time{}, true)
	if _, err := extraPeer.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a connection held when the server stopped was not closed: %v", err)
	}
	if len(h.conns) != 0 || h.hold(extra, now) {
		t.Fatal("a stopped hold keeps connections")
	}
}

// TestConnectionRateFromOneHostIsCappedAtAccept: a host that opens
// connections faster than new_connections_per_second gets the excess closed
// at accept (no handshake work spent), counted as connection_rate, while a
// gateway from another address connects and calls.
func TestConnectionRateFromOneHostIsCappedAtAccept(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	cfg.Limits.NewConnectionsPerSecond = 2 // bursts of 4
	p := startProxy(t, pki, cfg, plans)
	for i := 0; i < 12; i++ {
		dialFrom(t, "127.0.0.3", p.tlsAddr)
	}
	waitFor(t, "connections over the rate closed at accept", func() bool {
		return testutil.ToFloat64(p.m.Handshakes.WithLabelValues("refused", "connection_rate")) >= 6
	})
	if err := placeCall(p.gateway(t)); err != nil {
		t.Fatalf("gateway call beside the connection flood: %v", err)
	}
}

// Each stream connection counts the transactions it sent that are in the
// table, so that closing one that sent none (OPTIONS only: keep-alives,
// reconnecting gateways, floods) does not walk every transaction; the
// count follows adds, failover rekeys and repeated removals exactly.
func TestTransactionsAreCountedPerSenderConnection(t *testing.T) {
	var txs txTable
	txs.init()
	busy, quiet := &streamConn{id: 1}, &streamConn{id: 2}
	a := &transaction{serverKey: "a|h|INVITE", branch: "z9hG4bKa", in: busy}
	b := &transaction{serverKey: "b|h|BYE", branch: "z9hG4bKb", in: busy}
	txs.add(a)
	txs.add(b)
	if got := len(txs.from(busy)); got != 2 || busy.liveTxs.Load() != 2 {
		t.Fatalf("busy connection: from %d, counted %d; want 2 and 2", got, busy.liveTxs.Load())
	}
	if got := txs.from(quiet); got != nil || quiet.liveTxs.Load() != 0 {
		t.Fatalf("quiet connection: from %v, counted %d; want none", got, quiet.liveTxs.Load())
	}
	a.branch = "z9hG4bKa2"
	txs.rekey(a, "z9hG4bKa")
	txs.remove(b)
	txs.remove(b) // removal is idempotent, so is the count
	if got := txs.from(busy); len(got) != 1 || got[0] != a || busy.liveTxs.Load() != 1 {
		t.Fatalf("after a rekey and a removal: from %v, counted %d; want [a] and 1", got, busy.liveTxs.Load())
	}
	txs.remove(a)
	if got := txs.from(busy); got != nil || busy.liveTxs.Load() != 0 {
		t.Fatalf("after both removed: from %v, counted %d; want none", got, busy.liveTxs.Load())
	}
}

// An operator's drain is undone by Undrain; a shutdown's drain is not, so
// that an undrain racing a SIGTERM never reopens a node on its way out.
func TestUndrainEndsAnOperatorsDrainNotAShutdowns(t *testing.T) {
	pki := newTestPKI(t)
	cfg, plans := baseConfig("127.0.0.1:9") // never reached
	p := startProxy(t, pki, cfg, plans)
	gw := p.gateway(t)
	// refusedForDrain: the INVITE's final answer is the drain's 503 (the
	// backend here is unreachable, so a taken call fails otherwise).
	refusedForDrain := func() bool {
		inv, _ := gw.invite("12345")
		gw.send(inv)
		r := gw.finalResponse(5 * time.Second)
		w := r.GetHeader("Warning")
		return r.StatusCode == 503 && w != nil && strings.Contains(w.Value(), "draining")
	}
	p.s.Drain()
	if !refusedForDrain() || !p.s.Status().Draining {
		t.Fatal("drained: the INVITE was not refused for the drain")
	}
	if err := p.s.Undrain(); err != nil || p.s.Status().Draining {
		t.Fatalf("Undrain after Drain: %v, draining %v; want nil and false", err, p.s.Status().Draining)
	}
	if refusedForDrain() {
		t.Fatal("INVITE after Undrain refused for the drain")
	}
	p.s.DrainToStop()
	if err := p.s.Undrain(); !errors.Is(err, ErrStopping) || !p.s.Status().Draining {
		t.Fatalf("Undrain during a shutdown's drain: %v, draining %v; want ErrStopping and true", err, p.s.Status().Draining)
	}
	if !refusedForDrain() {
		t.Fatal("INVITE after a refused Undrain was not refused for the drain")
	}
}
