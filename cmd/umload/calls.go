package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// callsConfig is what `umload calls` does.
type callsConfig struct {
	conns           int
	total           int
	dur             time.Duration
	rate            float64
	inflight        int
	callTimeout     time.Duration
	hold            time.Duration
	toUser          string
	fromUser        string
	srtp            bool
	routeLines      bool
	connectParallel int
}

// Hard bounds that no flag can lift: every run ends by itself.
const (
	maxTotal    = 100_000_000
	maxDuration = 24 * time.Hour
)

func cmdCalls(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("calls", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	var o callsConfig
	fs.IntVar(&o.conns, "c", 50, "persistent TLS `connections`, each a gateway")
	fs.IntVar(&o.total, "n", 10000, "start at most `N` calls")
	fs.DurationVar(&o.dur, "d", 60*time.Second, "start calls for at most `D`")
	fs.Float64Var(&o.rate, "rate", 0, "target `calls/s` over all connections, paced (0: unpaced: each connection keeps -inflight calls going)")
	fs.IntVar(&o.inflight, "inflight", 0, "calls in flight per connection (default 1 unpaced; a cap of 64 when paced)")
	fs.DurationVar(&o.callTimeout, "call-timeout", 10*time.Second, "a call not answered (INVITE) or not ended (BYE) in this time fails")
	fs.DurationVar(&o.hold, "hold", 0, "time between ACK and BYE")
	fs.StringVar(&o.toUser, "to-user", "12345", "called number: the Request-URI user part")
	fs.StringVar(&o.fromUser, "from-user", "5551234", "calling number: the From user part")
	fs.BoolVar(&o.srtp, "srtp", false, "offer SRTP (RTP/SAVP with a=crypto), as a secured dial plan requires")
	fs.BoolVar(&o.routeLines, "route-lines", false, "send the route set of ACK and BYE as one Route header per entry (default: one comma-separated Route header; both are valid SIP)")
	fs.IntVar(&o.connectParallel, "connect-parallel", 32, "TLS handshakes in parallel while connecting")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: umload calls [flags]\n\nFull calls (INVITE with SDP, 100, 180, 200, ACK, BYE, 200) over C persistent mutual-TLS\nconnections; bounded by -n and -d, whichever comes first.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "umload: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	tlsConf, err := cf.setup()
	if err == nil {
		err = o.check()
	}
	if err != nil {
		fmt.Fprintln(stderr, "umload calls:", err)
		return 2
	}
	r := newCallRun(o, &cf, tlsConf)
	rep, err := r.run()
	cf.stopProfile()
	if err != nil {
		fmt.Fprintln(stderr, "umload calls:", err)
		return 1
	}
	if err := rep.print(stdout, cf.quiet); err != nil {
		fmt.Fprintln(stderr, "umload calls:", err)
		return 1
	}
	if r.ok.Load() == 0 || r.failed.Load() > 0 || len(r.connFails.snapshot()) > 0 {
		return 1
	}
	return 0
}

func (o *callsConfig) check() error {
	switch {
	case o.conns < 1 || o.conns > 100000:
		return errors.New("-c: between 1 and 100000 connections")
	case o.total < 1 || o.total > maxTotal:
		return fmt.Errorf("-n: between 1 and %d", maxTotal)
	case o.dur <= 0 || o.dur > maxDuration:
		return fmt.Errorf("-d: between 0 and %s", maxDuration)
	case o.rate < 0:
		return errors.New("-rate: not negative")
	case o.inflight < 0:
		return errors.New("-inflight: not negative")
	case o.callTimeout <= 0:
		return errors.New("-call-timeout: positive")
	case o.connectParallel < 1:
		return errors.New("-connect-parallel: at least 1")
	}
	if o.inflight == 0 {
		o.inflight = 1
		if o.rate > 0 {
			o.inflight = 64
		}
	}
	return nil
}

// callState is where a call is.
type callState uint8

const (
	stInviting callState = iota // INVITE sent, no final response yet
	stHolding                   // ACK sent, BYE due at byeAt
	stBye                       // BYE sent
)

func (s callState) String() string {
	switch s {
	case stInviting:
		return "invite"
	case stHolding:
		return "hold"
	}
	return "bye"
}

// call is one call of a connection; its fields are guarded by the
// connection's mu.
type call struct {
	id       string // Call-ID
	from     string // From value with tag
	n        uint64 // call number on the connection
	state    callState
	sent     time.Time // INVITE written
	deadline time.Time
	byeAt    time.Time
	to       string   // To value of the 2xx, with the remote tag
	rs       routeSet // from the 2xx
}

// callRun is one run of `umload calls`.
type callRun struct {
	o       callsConfig
	cf      *clientFlags
	tlsConf *tls.Config
	runID   string
	sdp     []byte

	started   atomic.Int64 // calls reserved (counted before the INVITE is sent)
	ok        atomic.Int64
	failed    atomic.Int64
	stopping  atomic.Bool // no new calls
	closing   atomic.Bool // connections are being closed on purpose
	lastDone  atomic.Int64
	fails     reasons
	connFails reasons      // connections that did not open
	prov      atomic.Int64 // provisional responses
	retrans   atomic.Int64 // 2xx to INVITE received again and re-ACKed
	stray     atomic.Int64 // responses matching no call
	reqs      atomic.Int64 // requests received from the server, answered
	lostConns atomic.Int64

	startAt time.Time
	stopAt  time.Time
	conns   []*callConn
	rr      atomic.Uint64 // round-robin position of the pacer
}

func newCallRun(o callsConfig, cf *clientFlags, tlsConf *tls.Config) *callRun {
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return &callRun{o: o, cf: cf, tlsConf: tlsConf, runID: hex.EncodeToString(rnd[:])}
}

// reserve takes one call from the budget (count and time), or reports
// that the run stops starting calls.
func (r *callRun) reserve(now time.Time) bool {
	if r.stopping.Load() {
		return false
	}
	if now.After(r.stopAt) {
		r.stopping.Store(true)
		return false
	}
	if r.started.Add(1) > int64(r.o.total) {
		r.started.Add(-1)
		r.stopping.Store(true)
		return false
	}
	return true
}

func (r *callRun) run() (*report, error) {
	host, _, _ := splitHost(r.cf.target)
	r.sdp = sdpOffer(host, r.o.srtp)
	if err := r.connect(); err != nil {
		return nil, err
	}
	cpuw := startCPU(r.cf.procs, r.cf.others)
	r.startAt = time.Now()
	r.stopAt = r.startAt.Add(r.o.dur)
	r.lastDone.Store(r.startAt.UnixNano())
	var readers sync.WaitGroup
	for _, c := range r.conns {
		readers.Add(1)
		go func() {
			defer readers.Done()
			c.readLoop()
		}()
	}
	prog := startProgress(r.progressLine)
	pacerDone := make(chan struct{})
	if r.o.rate > 0 {
		go r.pace(pacerDone)
	} else {
		close(pacerDone)
		for _, c := range r.conns {
			for i := 0; i < r.o.inflight && r.reserve(time.Now()); i++ {
				c.startCall(nil)
			}
		}
	}
	unfinished := r.monitor()
	<-pacerDone
	prog.end()
	end := time.Unix(0, r.lastDone.Load())
	spent := cpuw.stop()
	pss, rss := r.cf.procs.memory()
	r.closing.Store(true)
	for _, c := range r.conns {
		c.tc.Close()
	}
	readers.Wait()

	var h histogram
	for _, c := range r.conns {
		h.merge(&c.hist)
	}
	elapsed := end.Sub(r.startAt)
	ok := r.ok.Load()
	rep := &report{}
	rep.add("mode", "mode", "calls")
	rep.add("target", "target", r.cf.target)
	rep.add("connections", "connections", len(r.conns))
	rep.add("connect_failures", "connections that did not open", r.connFails.snapshot())
	rep.add("inflight_per_connection", "calls in flight per connection", r.o.inflight)
	rep.add("rate_target", "target rate (calls/s, 0 = unpaced)", r.o.rate)
	rep.add("calls_started", "calls started", r.started.Load())
	rep.add("calls_ok", "calls completed", ok)
	rep.add("calls_failed", "calls failed", r.failed.Load())
	rep.add("failures", "failures by reason", r.fails.snapshot())
	rep.add("unfinished", "calls unfinished at the hard stop", unfinished)
	rep.add("elapsed_s", "elapsed", elapsed)
	rep.add("calls_per_s", "calls/s", perSecond(ok, elapsed))
	rep.add("invite_200_ms", "INVITE -> 200", h.summary())
	rep.add("provisional", "provisional responses", r.prov.Load())
	rep.add("retransmitted_200", "2xx retransmissions re-ACKed", r.retrans.Load())
	rep.add("stray_responses", "responses matching no call", r.stray.Load())
	rep.add("requests_received", "requests from the server answered", r.reqs.Load())
	rep.add("connections_lost", "connections lost during the run", r.lostConns.Load())
	spent.add(rep, r.cf.procs, r.cf.others)
	if r.cf.procs.enabled() {
		rep.add("target_cpu_us_per_call", "target CPU per call (µs)", perUnit(spent.target, ok, time.Microsecond))
		rep.add("target_pss_kib", "target PSS at the end (KiB)", pss)
		rep.add("target_rss_kib", "target RSS at the end (KiB)", rss)
	}
	rep.add("load_cpu_us_per_call", "umload CPU per call (µs)", perUnit(spent.self, ok, time.Microsecond))
	return rep, nil
}

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

func perUnit(d time.Duration, n int64, unit time.Duration) float64 {
	if n == 0 {
		return 0
	}
	return float64(d) / float64(unit) / float64(n)
}

func (r *callRun) progressLine() string {
	done := r.ok.Load() + r.failed.Load()
	el := time.Since(r.startAt)
	return fmt.Sprintf("calls %d/%d ok %d failed %d  %.0f calls/s  %s", done, r.o.total, r.ok.Load(), r.failed.Load(),
		perSecond(done, el), el.Round(time.Second))
}

// connect opens the connections, -connect-parallel at a time, each tried
// up to three times. The run goes on with the connections that opened
// (those that did not are reported); it fails only when none did.
func (r *callRun) connect() error {
	conns := make([]*callConn, r.o.conns)
	sem := make(chan struct{}, r.o.connectParallel)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for attempt := 1; ; attempt++ {
				tc, err := r.cf.dial(context.Background(), r.tlsConf)
				if err == nil {
					conns[i] = newCallConn(r, i, tc)
					return
				}
				if attempt == 3 {
					r.connFails.add(errReason("connect", err))
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			r.conns = append(r.conns, c)
		}
	}
	if len(r.conns) == 0 {
		return fmt.Errorf("no connection opened: %s", human(r.connFails.snapshot()))
	}
	return nil
}

// monitor ends calls past their deadline, sends BYEs after -hold, and
// returns once every started call has ended and no more will start, or
// at the hard stop (-d + -call-timeout + 2 s) with the number of calls
// still unfinished (counted as failed).
func (r *callRun) monitor() int64 {
	hardStop := r.stopAt.Add(r.o.callTimeout + 2*time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var buf []byte
	for now := range tick.C {
		if now.After(r.stopAt) {
			r.stopping.Store(true)
		}
		for _, c := range r.conns {
			buf = c.sweep(now, buf)
		}
		if r.stopping.Load() && r.ok.Load()+r.failed.Load() >= r.started.Load() {
			return 0
		}
		if now.After(hardStop) {
			var n int64
			for _, c := range r.conns {
				n += c.abandon("unfinished")
			}
			return n
		}
	}
	return 0
}

// pace starts calls at -rate over the connections, round-robin, skipping
// connections at their in-flight cap (counted as failed: skipped_inflight_cap).
// It sleeps until the next call is due rather than ticking: a 1 ms ticker
// woke the process a thousand times a second whatever the rate (perf stat
// at 200 calls/s: 0.113 CPU and 79,000 context switches in 10 s, against
// 0.076 and 39,000 sleeping), CPU the server under test shares.
func (r *callRun) pace(done chan<- struct{}) {
	defer close(done)
	const maxSleep = 100 * time.Millisecond // to notice the end of the run
	timer := time.NewTimer(0)
	defer timer.Stop()
	var issued int64
	var buf []byte
	for now := range timer.C {
		due := int64(now.Sub(r.startAt).Seconds()*r.o.rate) - issued
		for ; due > 0; due-- {
			if !r.reserve(now) {
				return
			}
			issued++
			if !r.startSomewhere(&buf) {
				r.failed.Add(1)
				r.fails.add("skipped_inflight_cap")
				r.lastDone.Store(now.UnixNano())
			}
		}
		if r.stopping.Load() {
			return
		}
		next := r.startAt.Add(time.Duration(float64(issued+1) / r.o.rate * float64(time.Second)))
		timer.Reset(min(maxSleep, max(0, time.Until(next))))
	}
}

func (r *callRun) startSomewhere(buf *[]byte) bool {
	for range len(r.conns) {
		c := r.conns[r.rr.Add(1)%uint64(len(r.conns))]
		if b, ok := c.startCall(*buf); ok {
			*buf = b
			return true
		}
	}
	return false
}

// callConn is one persistent connection acting as a gateway. Its reader
// goroutine handles responses in arrival order and answers them (ACK,
// BYE) at once; the pacer and the monitor start calls and send BYEs too,
// so writes are serialised by wmu and call state is guarded by mu.
type callConn struct {
	r       *callRun
	idx     int
	tc      *tls.Conn
	local   string // our host:port, in Via and Contact
	via     string // "SIP/2.0/TLS host:port;branch="
	contact string
	ruri    string // initial Request-URI
	toInit  string // initial To

	wmu sync.Mutex

	mu    sync.Mutex
	calls map[string]*call
	seq   uint64
	dead  bool

	// The reader goroutine's own state.
	hist histogram
	msg  message
	rbuf []byte
}

func newCallConn(r *callRun, idx int, tc *tls.Conn) *callConn {
	local := tc.LocalAddr().String()
	domain := r.cf.domain
	return &callConn{
		r: r, idx: idx, tc: tc, local: local,
		via:     "SIP/2.0/TLS " + local + ";rport;branch=z9hG4bK" + r.runID + "." + strconv.Itoa(idx) + ".",
		contact: "<sip:" + r.o.fromUser + "@" + local + ";transport=tls>",
		ruri:    "sip:" + r.o.toUser + "@" + domain,
		toInit:  "<sip:" + r.o.toUser + "@" + domain + ">",
		calls:   make(map[string]*call, r.o.inflight*2),
	}
}

func (c *callConn) write(b []byte) {
	if c.r.cf.trace {
		traceMsg(c.idx, "->", b)
	}
	c.wmu.Lock()
	_, err := c.tc.Write(b)
	c.wmu.Unlock()
	if err != nil {
		c.lost("write")
	}
}

// startCall sends a new INVITE on this connection, building it in buf; it
// reports false when the connection is dead or at its in-flight cap.
func (c *callConn) startCall(buf []byte) ([]byte, bool) {
	c.mu.Lock()
	if c.dead || len(c.calls) >= c.r.o.inflight {
		c.mu.Unlock()
		return buf, false
	}
	c.seq++
	cl := &call{n: c.seq}
	cl.id = c.r.runID + "-" + strconv.Itoa(c.idx) + "-" + strconv.FormatUint(cl.n, 10) + "@umload"
	cl.from = "<sip:" + c.r.o.fromUser + "@" + c.local + ">;tag=" + strconv.FormatUint(cl.n, 36) + "x" + c.r.runID
	c.calls[cl.id] = cl
	now := time.Now()
	cl.sent, cl.deadline = now, now.Add(c.r.o.callTimeout)
	c.mu.Unlock()
	buf = c.invite(buf[:0], cl)
	c.write(buf)
	return buf, true
}

func (c *callConn) branch(b []byte, cl *call, kind byte) []byte {
	b = append(b, c.via...)
	b = strconv.AppendUint(b, cl.n, 10)
	return append(b, '.', kind)
}

func (c *callConn) invite(b []byte, cl *call) []byte {
	var via [96]byte
	return appendRequest(b, &requestParams{
		method: "INVITE", ruri: c.ruri, via: string(c.branch(via[:0], cl, 'i')),
		from: cl.from, to: c.toInit, callID: cl.id, cseq: 1, contact: c.contact, body: c.r.sdp,
	})
}

// ack2xx is the ACK of a 2xx (RFC 3261 §13.2.2.4): a new transaction to
// the remote target, along the route set.
func (c *callConn) ack2xx(b []byte, cl *call) []byte {
	var via [96]byte
	return appendRequest(b, &requestParams{
		method: "ACK", ruri: cl.rs.target, via: string(c.branch(via[:0], cl, 'a')),
		from: cl.from, to: cl.to, callID: cl.id, cseq: 1, routes: cl.rs.routes, routeLines: c.r.o.routeLines,
	})
}

// ackNon2xx is the ACK of a failure response (RFC 3261 §17.1.1.3): same
// branch and Request-URI as the INVITE, the response's To.
func (c *callConn) ackNon2xx(b []byte, cl *call, to []byte) []byte {
	var via [96]byte
	return appendRequest(b, &requestParams{
		method: "ACK", ruri: c.ruri, via: string(c.branch(via[:0], cl, 'i')),
		from: cl.from, to: string(to), callID: cl.id, cseq: 1,
	})
}

func (c *callConn) bye(b []byte, cl *call) []byte {
	var via [96]byte
	return appendRequest(b, &requestParams{
		method: "BYE", ruri: cl.rs.target, via: string(c.branch(via[:0], cl, 'b')),
		from: cl.from, to: cl.to, callID: cl.id, cseq: 2, routes: cl.rs.routes, routeLines: c.r.o.routeLines,
	})
}

// ackFromResponse ACKs a 2xx whose call already ended, from the response
// alone (its Record-Route, Contact, From, To, Call-ID and CSeq).
func (c *callConn) ackFromResponse(b []byte, m *message) []byte {
	rs := dialogRoute(m.recordRoutes, m.contact)
	return appendRequest(b, &requestParams{
		method: "ACK", ruri: rs.target,
		via:  c.via + "late." + strconv.FormatInt(time.Now().UnixNano(), 36) + ".a",
		from: string(m.from), to: string(m.to), callID: string(m.callID), cseq: m.cseq, routes: rs.routes,
		routeLines: c.r.o.routeLines,
	})
}

// finish ends a call (mu held): reason "" is success.
func (c *callConn) finish(cl *call, reason string) {
	delete(c.calls, cl.id)
	if reason == "" {
		c.r.ok.Add(1)
	} else {
		c.r.failed.Add(1)
		c.r.fails.add(reason)
	}
	c.r.lastDone.Store(time.Now().UnixNano())
}

// refill starts n calls in place of ended ones when unpaced, building
// them in buf (owned by the calling goroutine); it returns buf for reuse.
func (c *callConn) refill(n int, buf []byte) []byte {
	if c.r.o.rate > 0 {
		return buf
	}
	for ; n > 0 && c.r.reserve(time.Now()); n-- {
		var ok bool
		if buf, ok = c.startCall(buf); !ok {
			// Dead connection: the reserved call fails.
			c.r.failed.Add(1)
			c.r.fails.add("connection_lost")
		}
	}
	return buf
}

func (c *callConn) readLoop() {
	sr := newStreamReader(c.tc)
	for {
		frame, err := sr.next()
		if err != nil {
			if !c.r.closing.Load() {
				c.lost("read")
			}
			return
		}
		if c.r.cf.trace {
			traceMsg(c.idx, "<-", frame)
		}
		if err := c.msg.parse(frame); err != nil {
			c.r.stray.Add(1)
			continue
		}
		if c.msg.request {
			c.answer(&c.msg)
		} else {
			c.onResponse(&c.msg)
		}
	}
}

// answer responds to a request from the server: 200 to anything but ACK.
func (c *callConn) answer(m *message) {
	if bytes.Equal(m.method, []byte("ACK")) {
		return
	}
	c.r.reqs.Add(1)
	c.rbuf = appendResponse(c.rbuf[:0], m, 200, "OK", "umload", false, "", "", nil)
	c.write(c.rbuf)
}

func (c *callConn) onResponse(m *message) {
	now := time.Now()
	invite := bytes.Equal(m.cseqMethod, []byte("INVITE"))
	c.mu.Lock()
	cl := c.calls[string(m.callID)]
	if cl == nil {
		c.mu.Unlock()
		if invite && m.code >= 200 && m.code < 300 {
			c.r.retrans.Add(1)
			c.rbuf = c.ackFromResponse(c.rbuf[:0], m)
			c.write(c.rbuf)
			return
		}
		c.r.stray.Add(1)
		return
	}
	switch {
	case invite && cl.state == stInviting:
		switch {
		case m.code < 200:
			c.mu.Unlock()
			c.r.prov.Add(1)
		case m.code < 300:
			c.hist.add(now.Sub(cl.sent))
			cl.to = string(m.to)
			contact := m.contact
			if len(contact) == 0 {
				contact = []byte(c.ruri)
			}
			cl.rs = dialogRoute(m.recordRoutes, contact)
			c.rbuf = c.ack2xx(c.rbuf[:0], cl)
			if c.r.o.hold == 0 {
				c.rbuf = c.bye(c.rbuf, cl)
				cl.state, cl.deadline = stBye, now.Add(c.r.o.callTimeout)
			} else {
				cl.state, cl.byeAt = stHolding, now.Add(c.r.o.hold)
				cl.deadline = cl.byeAt.Add(c.r.o.callTimeout)
			}
			c.mu.Unlock()
			c.write(c.rbuf)
		default:
			c.rbuf = c.ackNon2xx(c.rbuf[:0], cl, m.to)
			c.finish(cl, "invite_"+strconv.Itoa(m.code))
			c.mu.Unlock()
			c.write(c.rbuf)
			c.rbuf = c.refill(1, c.rbuf)
		}
	case invite:
		// A 2xx again (our ACK crossed its retransmission) or a late provisional.
		if m.code >= 200 && m.code < 300 {
			c.r.retrans.Add(1)
			c.rbuf = c.ack2xx(c.rbuf[:0], cl)
			c.mu.Unlock()
			c.write(c.rbuf)
			return
		}
		c.mu.Unlock()
		if m.code < 200 {
			c.r.prov.Add(1)
		}
	case cl.state == stBye && bytes.Equal(m.cseqMethod, []byte("BYE")):
		if m.code < 200 {
			c.mu.Unlock()
			return
		}
		reason := ""
		if m.code >= 300 {
			reason = "bye_" + strconv.Itoa(m.code)
		}
		c.finish(cl, reason)
		c.mu.Unlock()
		c.rbuf = c.refill(1, c.rbuf)
	default:
		c.mu.Unlock()
		c.r.stray.Add(1)
	}
}

// sweep fails calls past their deadline and sends BYEs due after -hold;
// it returns buf for reuse.
func (c *callConn) sweep(now time.Time, buf []byte) []byte {
	ended := 0
	buf = buf[:0]
	c.mu.Lock()
	for _, cl := range c.calls {
		switch {
		case cl.state == stHolding && !now.Before(cl.byeAt):
			buf = c.bye(buf, cl)
			cl.state, cl.deadline = stBye, now.Add(c.r.o.callTimeout)
		case now.After(cl.deadline):
			c.finish(cl, "timeout_"+cl.state.String())
			ended++
		}
	}
	c.mu.Unlock()
	if len(buf) > 0 {
		c.write(buf)
	}
	if ended > 0 {
		buf = c.refill(ended, buf)
	}
	return buf
}

// lost marks the connection dead and fails its calls.
func (c *callConn) lost(op string) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	for _, cl := range c.calls {
		c.finish(cl, "connection_lost_"+op)
	}
	c.mu.Unlock()
	c.r.lostConns.Add(1)
	c.tc.Close()
}

// abandon fails every call still in progress with reason.
func (c *callConn) abandon(reason string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := int64(len(c.calls))
	for _, cl := range c.calls {
		c.finish(cl, reason)
	}
	return n
}
