package proxy

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/umrouter/umrouter/internal/sipptest"
	"github.com/umrouter/umrouter/internal/testpki"
)

// holdCall sets up a call and leaves it established (no BYE).
func holdCall(t *testing.T, c *sipClient) *dialog {
	t.Helper()
	inv, d := c.invite("12345")
	c.send(inv)
	r := c.finalResponse(10 * time.Second)
	if r.StatusCode != 200 {
		t.Fatalf("INVITE answered %s", r.StartLine())
	}
	d.establish(r)
	c.send(c.inDialog(d, "ACK"))
	return d
}

// hangUp ends a held call and requires a 200 to the BYE.
func hangUp(t *testing.T, c *sipClient, d *dialog) {
	t.Helper()
	c.send(c.inDialog(d, "BYE"))
	if r := c.responseTo("BYE", 10*time.Second); r.StatusCode != 200 {
		t.Fatalf("BYE answered %s", r.StartLine())
	}
}

func incoming(t *testing.T, u *sipptest.UAS) int {
	t.Helper()
	st, err := u.Stats()
	if err != nil {
		t.Fatalf("SIPp stats: %v", err)
	}
	return st.IncomingCalls
}

// waitIncoming waits until u has counted want calls (SIPp writes its
// statistics every 100 ms).
func waitIncoming(t *testing.T, u *sipptest.UAS, want int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("backend %s to count %d calls", u.Addr(), want), func() bool {
		st, err := u.Stats()
		return err == nil && st.IncomingCalls >= want
	})
	if got := incoming(t, u); got != want {
		t.Fatalf("backend %s received %d calls, want %d", u.Addr(), got, want)
	}
}

func TestWeightedBalanceSplitsCallsByWeight(t *testing.T) {
	var uas []*sipptest.UAS
	for i := 0; i < 3; i++ {
		uas = append(uas, sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"}))
	}
	pki := newTestPKI(t)
	cfg, plans := baseConfig()
	cfg.Backends.Balance = "weighted"
	for i, u := range uas {
		cfg.Backends.Servers = append(cfg.Backends.Servers, Backend{Address: u.Addr(), Weight: i + 1})
	}
	p := startProxy(t, pki, cfg, plans)
	for _, err := range callsInParallel(t, p, 6, 100, placeCall) {
		t.Fatal(err)
	}
	// Weights 1:2:3 over 600 calls: 100, 200, 300, within 5 %.
	for i, u := range uas {
		want := 100 * (i + 1)
		st, err := u.WaitSuccessful(want*95/100, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if d := st.IncomingCalls - want; d < -want/20 || d > want/20 {
			t.Errorf("backend weight %d got %d calls, want %d ±5%%", i+1, st.IncomingCalls, want)
		}
	}
}

func TestLeastCallsSendsNewCallsToTheLeastBusyServers(t *testing.T) {
	var uas []*sipptest.UAS
	for i := 0; i < 3; i++ {
		uas = append(uas, sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"}))
	}
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas[0].Addr(), uas[1].Addr(), uas[2].Addr())
	cfg.Backends.Balance = "least-calls"
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	// Six calls held on the first server while the others are disabled...
	for _, u := range uas[1:] {
		if err := p.s.SetBackendState(u.Addr(), AdminDisabled); err != nil {
			t.Fatal(err)
		}
	}
	var held []*dialog
	for i := 0; i < 6; i++ {
		held = append(held, holdCall(t, c))
	}
	for _, u := range uas[1:] {
		if err := p.s.SetBackendState(u.Addr(), AdminEnabled); err != nil {
			t.Fatal(err)
		}
	}
	// ...then six more go to the two idle servers, three each (round-robin
	// would have given the busy one two of them).
	for i := 0; i < 6; i++ {
		held = append(held, holdCall(t, c))
	}
	waitIncoming(t, uas[0], 6)
	waitIncoming(t, uas[1], 3)
	waitIncoming(t, uas[2], 3)
	if got := testutil.ToFloat64(p.m.CallsActive); got != 12 {
		t.Fatalf("umrouter_calls_active = %v, want 12", got)
	}
	for _, d := range held {
		hangUp(t, c, d)
	}
	if got := testutil.ToFloat64(p.m.CallsActive); got != 0 {
		t.Fatalf("umrouter_calls_active = %v after hang-up, want 0", got)
	}
}

func TestBackendAnswering503WithRetryAfterIsSkippedForThatLong(t *testing.T) {
	busy := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas_503.xml"}) // Retry-After: 30
	good := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(busy.Addr(), good.Addr())
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	for i := 0; i < 10; i++ {
		if err := placeCall(c); err != nil {
			t.Fatalf("call %d: the caller saw the failover: %v", i, err)
		}
	}
	waitIncoming(t, good, 10)
	if got := incoming(t, busy); got != 1 {
		t.Fatalf("the busy backend got %d INVITEs within its Retry-After, want 1", got)
	}
}

func TestDrainedBackendKeepsItsDialogsAndTakesNoNewCall(t *testing.T) {
	a := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	b := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(a.Addr(), b.Addr())
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	if err := p.s.SetBackendState(b.Addr(), AdminDisabled); err != nil {
		t.Fatal(err)
	}
	held := holdCall(t, c) // lands on a: b is disabled
	if err := p.s.SetBackendState(b.Addr(), AdminEnabled); err != nil {
		t.Fatal(err)
	}
	if err := p.s.SetBackendState(a.Addr(), AdminDrain); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := placeCall(c); err != nil {
			t.Fatal(err)
		}
	}
	hangUp(t, c, held) // the drained server's dialog still works
	if st, err := a.WaitSuccessful(1, 10*time.Second); err != nil || st.IncomingCalls != 1 {
		t.Fatalf("drained backend: %v %+v, want exactly its one held call, completed", err, st)
	}
	waitIncoming(t, b, 10)
}

func TestKilledBackendCostsNoCallThatHadNotReachedIt(t *testing.T) {
	// Short stop grace: SIPp keeps a "call" per answered health probe (-aa)
	// open until it stops, and would wait the whole default grace for them.
	uasOpts := sipptest.UASOptions{Scenario: "uas.xml", StopGrace: 500 * time.Millisecond}
	var uas []*sipptest.UAS
	for i := 0; i < 3; i++ {
		uas = append(uas, sipptest.StartUAS(t, uasOpts))
	}
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas[0].Addr(), uas[1].Addr(), uas[2].Addr())
	probes := true
	cfg.Backends.Health = HealthConfig{Probe: &probes, Interval: time.Second, Timeout: 900 * time.Millisecond, DownAfter: 2, UpAfter: 2}
	p := startProxy(t, pki, cfg, plans)
	victim := uas[1]
	up := func() float64 { return testutil.ToFloat64(p.m.BackendUp.WithLabelValues(victim.Addr())) }

	const conns = 3
	var done sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	stop := make(chan struct{})
	calls := 0
	for i := 0; i < conns; i++ {
		c := p.gateway(t)
		c.name = fmt.Sprintf("k%d", i)
		done.Add(1)
		go func() {
			defer done.Done()
			for n := 0; n < 2000; n++ { // bounded stream
				select {
				case <-stop:
					return
				default:
				}
				err := placeCall(c)
				mu.Lock()
				calls++
				if err != nil {
					failures = append(failures, err)
				}
				mu.Unlock()
			}
		}()
	}
	waitFor(t, "30 calls before the kill", func() bool { mu.Lock(); defer mu.Unlock(); return calls >= 30 })
	killedAt := time.Now()
	port := victim.Port()
	victim.Stop()
	waitFor(t, "the killed backend to be marked down", func() bool { return up() == 0 })
	t.Logf("marked down %s after the kill (down_after x interval = %s)", time.Since(killedAt).Round(time.Millisecond), 2*cfg.Backends.Health.Interval)
	mu.Lock()
	atKill := calls
	mu.Unlock()
	waitFor(t, "30 more calls while it is down", func() bool { mu.Lock(); defer mu.Unlock(); return calls >= atKill+30 })

	uasOpts.Port = port
	restarted := sipptest.StartUAS(t, uasOpts)
	waitFor(t, "the restarted backend to be marked up", func() bool { return up() == 1 })
	waitFor(t, "the restarted backend to take calls", func() bool { st, err := restarted.Stats(); return err == nil && st.IncomingCalls > 0 })
	close(stop)
	done.Wait()
	// Only calls already at the victim when it died may fail: at most one
	// per connection (each connection places one call at a time).
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > conns {
		t.Fatalf("%d of %d calls failed, more than the %d that could have been at the killed backend: %v", len(failures), calls, conns, failures)
	}
	t.Logf("%d calls, %d failed (calls in progress at the killed backend)", calls, len(failures))
}

func TestRedirectModeAnswers302WithAHealthyBackendThatCompletesTheCall(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	cfg.Backends.Mode = "redirect"
	p := startProxy(t, pki, cfg, plans)
	c := p.gateway(t)
	inv, _ := c.invite("12345")
	c.send(inv)
	r := c.finalResponse(5 * time.Second)
	if r.StatusCode != 302 {
		t.Fatalf("want 302, got %s", r.StartLine())
	}
	ct := r.Contact()
	if ct == nil {
		t.Fatal("302 without Contact")
	}
	want := fmt.Sprintf("sip:12345@%s;transport=udp", uas.Addr())
	if got := ct.Address.String(); got != want {
		t.Fatalf("Contact %s, want %s", got, want)
	}
	// Follow the redirect as a gateway would: call the backend directly.
	callOverUDP(t, net.JoinHostPort(ct.Address.Host, fmt.Sprint(ct.Address.Port)))
	if _, err := uas.WaitSuccessful(1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// callOverUDP places INVITE/200/ACK/BYE/200 to addr from a UDP socket.
func callOverUDP(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	callID := fmt.Sprintf("redirected-%d", time.Now().UnixNano())
	head := func(method string, seq int, toTag string) string {
		to := "<sip:12345@" + addr + ">"
		if toTag != "" {
			to += ";tag=" + toTag
		}
		return fmt.Sprintf("%s sip:12345@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s-%d\r\nMax-Forwards: 70\r\n"+
			"From: <sip:gw@%s>;tag=gwtag\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\nContact: <sip:gw@%s>\r\n",
			method, addr, local, strings.ToLower(method), seq, gwName, to, callID, seq, method, local)
	}
	read := func(want int) *sip.Response {
		buf := make([]byte, 65536)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %d: %v", want, err)
			}
			m, err := sip.ParseMessage(buf[:n])
			if err != nil {
				t.Fatal(err)
			}
			if r, ok := m.(*sip.Response); ok && r.StatusCode == want {
				return r
			}
		}
	}
	send := func(s string) {
		if _, err := conn.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	send(head("INVITE", 1, "") + fmt.Sprintf("Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", len(testSDP), testSDP))
	ok := read(200)
	tag, _ := ok.To().Params.Get("tag")
	send(head("ACK", 1, tag) + "Content-Length: 0\r\n\r\n")
	send(head("BYE", 2, tag) + "Content-Length: 0\r\n\r\n")
	read(200)
}

func TestOutcallFromBackendReachesGatewayOverTLSOnItsPort(t *testing.T) {
	pki := newTestPKI(t)
	gwUAS := startTLSUAS(t, pki.ca, pki.ca.Issue(t, testpki.LeafOptions{CN: "localhost", DNS: []string{"localhost"}}))
	_, gwPort, _ := net.SplitHostPort(gwUAS.addr())
	for _, allowed := range []bool{true, false} {
		t.Run(fmt.Sprintf("outcalls_allowed=%v", allowed), func(t *testing.T) {
			uacPort := freeUDPPort(t)
			cfg, plans := baseConfig(fmt.Sprintf("127.0.0.1:%d", uacPort))
			var port int
			fmt.Sscan(gwPort, &port)
			cfg.Gateways = append(cfg.Gateways, Gateway{Name: "pstn", Address: "localhost", Port: port, DialPlan: "main", OutcallsAllowed: &allowed})
			p := startProxy(t, pki, cfg, plans)
			invitesBefore := gwUAS.invites.Load()
			res := sipptest.RunUAC(t, sipptest.UACOptions{
				Remote:   fmt.Sprintf("127.0.0.1:%d", p.s.udp.LocalAddr().(*net.UDPAddr).Port),
				Scenario: "uac_outcall.xml", Service: "5551234", Calls: 3, Limit: 1, Timeout: 30 * time.Second,
				ExtraArgs: []string{"-p", fmt.Sprint(uacPort), "-key", "gateway", "localhost:" + gwPort},
			})
			if allowed {
				if res.Successful != 3 {
					t.Fatalf("outcalls: %d successful, want 3\n%s", res.Successful, res.ErrorLog)
				}
				if n := gwUAS.byes.Load(); n < 3 {
					t.Fatalf("gateway saw %d BYEs, want 3", n)
				}
				return
			}
			if n := gwUAS.invites.Load(); n != invitesBefore {
				t.Fatalf("gateway with outcalls_allowed=false received %d INVITEs", n-invitesBefore)
			}
			if got := testutil.ToFloat64(p.m.Refusals.WithLabelValues("403", "outcalls_not_allowed")); got != 3 {
				t.Fatalf("want 3 refusals counted as outcalls_not_allowed, got %v", got)
			}
		})
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
