package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/maphash"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// cmdUAS runs a UDP user agent server to use as a proxy's backend instead
// of SIPp: INVITE -> 100, 180, 200 with SDP (retransmitted until the ACK,
// RFC 3261 §13.3.1.4), BYE -> 200, OPTIONS -> 200, CANCEL -> 200 and 487.
// It counts what a proxy must get right: BYEs that arrive before the ACK
// of their call, and 2xx never ACKed.
func cmdUAS(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uas", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := uasConfig{}
	fs.StringVar(&o.listen, "listen", "127.0.0.1:5070", "UDP `address` to serve")
	fs.IntVar(&o.readers, "readers", 1, "goroutines reading the socket (more than 1 may handle back-to-back datagrams out of order, e.g. a BYE before its ACK)")
	fs.IntVar(&o.buffer, "buffer", 8<<20, "socket receive and send buffer `bytes` (SO_RCVBUFFORCE when permitted)")
	fs.DurationVar(&o.answerDelay, "answer-delay", 0, "time between 180 and 200")
	fs.DurationVar(&o.dur, "d", 10*time.Minute, "serve for at most `D`")
	fs.Int64Var(&o.maxCalls, "n", 50_000_000, "stop after `N` INVITEs")
	quiet := fs.Bool("quiet", false, "print only the JSON line")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: umload uas [flags]\n\nA UDP UAS backend; stops after -d or -n, or on SIGINT/SIGTERM, and prints its counters.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "umload: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if o.dur <= 0 || o.dur > maxDuration || o.readers < 1 || o.maxCalls < 1 {
		fmt.Fprintln(stderr, "umload uas: -d, -n and -readers must be positive (-d at most 24h)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	u, err := listenUAS(o)
	if err != nil {
		fmt.Fprintln(stderr, "umload uas:", err)
		return 1
	}
	fmt.Fprintf(stderr, "umload uas: serving on %s (receive buffer %d bytes)\n", u.pc.LocalAddr(), u.rcvbuf)
	u.serve(ctx)
	if err := u.report().print(stdout, *quiet); err != nil {
		fmt.Fprintln(stderr, "umload uas:", err)
		return 1
	}
	return 0
}

type uasConfig struct {
	listen      string
	readers     int
	buffer      int
	answerDelay time.Duration
	dur         time.Duration
	maxCalls    int64
}

// uas is a running UDP UAS.
type uas struct {
	o      uasConfig
	pc     *net.UDPConn
	rcvbuf int
	host   string
	start  time.Time
	end    time.Time

	seed   maphash.Seed
	shards [64]uasShard

	invites, acks, byes, options, cancels, others               atomic.Int64
	retransIn, retrans200, byeBeforeAck, byeUnknown, byeRetrans atomic.Int64
	ackTimeout, noBye, malformed                                atomic.Int64
	calls                                                       atomic.Int64
}

type uasShard struct {
	mu    sync.Mutex
	calls map[string]*uasCall
}

// uasCall is a call's server-side state, kept until it has both its ACK
// and its BYE (or times out).
type uasCall struct {
	addr     netip.AddrPort
	last     []byte // last response to the INVITE, for retransmissions
	answered bool   // 200 sent
	acked    bool
	byeDone  bool
	canceled bool      // answered 487: the ACK ends it
	ended    bool      // ACK and BYE (or CANCEL) seen: kept until endedAt + 32 s
	endedAt  time.Time // to answer retransmissions
	created  time.Time
	nextRtx  time.Time
	interval time.Duration
	timer    *time.Timer // pending delayed 200
}

func listenUAS(o uasConfig) (*uas, error) {
	ua, err := net.ResolveUDPAddr("udp", o.listen)
	if err != nil {
		return nil, fmt.Errorf("-listen: %w", err)
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	u := &uas{o: o, pc: pc, seed: maphash.MakeSeed(), start: time.Now()}
	u.rcvbuf = setBuffers(pc, o.buffer)
	u.host = pc.LocalAddr().(*net.UDPAddr).IP.String()
	for i := range u.shards {
		u.shards[i].calls = map[string]*uasCall{}
	}
	return u, nil
}

// setBuffers sizes the socket buffers, beyond net.core.rmem_max when the
// process may (CAP_NET_ADMIN), and returns the receive buffer obtained.
func setBuffers(pc *net.UDPConn, size int) int {
	got := 0
	if rc, err := pc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size) != nil {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
			}
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, size) != nil {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, size)
			}
			got, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
		})
	}
	return got
}

// Addr is the UDP address served.
func (u *uas) Addr() string { return u.pc.LocalAddr().String() }

// serve answers until ctx ends, -d passes or -n INVITEs arrived.
func (u *uas) serve(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, u.o.dur)
	defer cancel()
	var wg sync.WaitGroup
	for range u.o.readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.readLoop(cancel)
		}()
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case now := <-tick.C:
			u.sweep(now)
		}
	}
	u.end = time.Now()
	u.pc.Close()
	wg.Wait()
}

func (u *uas) readLoop(stop context.CancelFunc) {
	buf := make([]byte, 65536)
	var m message
	var out []byte
	for {
		n, addr, err := u.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		pkt := buf[:n]
		if len(bytes.TrimSpace(pkt)) == 0 {
			continue // keep-alive
		}
		if m.parse(pkt) != nil || !m.request {
			u.malformed.Add(1)
			continue
		}
		out = u.handle(&m, addr, out[:0])
		if u.invites.Load() >= u.o.maxCalls {
			stop()
		}
	}
}

func (u *uas) shard(callID []byte) *uasShard {
	return &u.shards[maphash.Bytes(u.seed, callID)%uint64(len(u.shards))]
}

func (u *uas) send(b []byte, to netip.AddrPort) {
	_, _ = u.pc.WriteToUDPAddrPort(b, to)
}

// handle answers one request; out is scratch space returned for reuse.
func (u *uas) handle(m *message, from netip.AddrPort, out []byte) []byte {
	switch string(m.method) {
	case "INVITE":
		return u.invite(m, from, out)
	case "ACK":
		u.acks.Add(1)
		sh := u.shard(m.callID)
		sh.mu.Lock()
		if c := sh.calls[string(m.callID)]; c != nil && !c.acked {
			c.acked, c.last = true, nil
			c.ended = c.byeDone || c.canceled
			if c.ended {
				c.endedAt = time.Now()
			}
		}
		sh.mu.Unlock()
		return out
	case "BYE":
		u.byes.Add(1)
		sh := u.shard(m.callID)
		sh.mu.Lock()
		c := sh.calls[string(m.callID)]
		if c != nil && !c.byeDone {
			c.byeDone = true
			if !c.acked {
				u.byeBeforeAck.Add(1)
			} else {
				c.ended, c.endedAt = true, time.Now()
			}
		} else if c != nil {
			u.byeRetrans.Add(1)
		}
		sh.mu.Unlock()
		if c == nil {
			u.byeUnknown.Add(1)
			out = appendResponse(out, m, 481, "Call/Transaction Does Not Exist", "", false, "", "", nil)
		} else {
			out = appendResponse(out, m, 200, "OK", "", false, "", "", nil)
		}
	case "OPTIONS":
		u.options.Add(1)
		out = appendResponse(out, m, 200, "OK", "uas", false, "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n", "", nil)
	case "CANCEL":
		u.cancels.Add(1)
		out = appendResponse(out, m, 200, "OK", "uas", false, "", "", nil)
		u.send(out, from)
		sh := u.shard(m.callID)
		sh.mu.Lock()
		c := sh.calls[string(m.callID)]
		if c != nil && !c.answered {
			if c.timer != nil {
				c.timer.Stop()
			}
			c.answered, c.canceled = true, true // no 200 any more
			m.cseqMethod = []byte("INVITE")
			c.last = appendResponse(nil, m, 487, "Request Terminated", u.tag(m.callID), false, "", "", nil)
			out = append(out[:0], c.last...)
		} else {
			out = out[:0]
		}
		sh.mu.Unlock()
		if len(out) == 0 {
			return out
		}
	default:
		if string(m.method) != "ACK" {
			u.others.Add(1)
			out = appendResponse(out, m, 501, "Not Implemented", "uas", false, "", "", nil)
		}
	}
	u.send(out, from)
	return out
}

// tag is the To tag of a call: derived from its Call-ID so that every
// response of the call carries the same one without storing it.
func (u *uas) tag(callID []byte) string {
	return "uas" + strconv.FormatUint(maphash.Bytes(u.seed, callID), 36)
}

func (u *uas) invite(m *message, from netip.AddrPort, out []byte) []byte {
	sh := u.shard(m.callID)
	sh.mu.Lock()
	if c := sh.calls[string(m.callID)]; c != nil {
		// Retransmission: the last response again.
		u.retransIn.Add(1)
		last := c.last
		sh.mu.Unlock()
		if last != nil {
			u.send(last, from)
		}
		return out
	}
	u.invites.Add(1)
	u.calls.Add(1)
	now := time.Now()
	c := &uasCall{addr: from, created: now, interval: 500 * time.Millisecond}
	sh.calls[string(m.callID)] = c
	tag := u.tag(m.callID)
	contact := "Contact: <sip:uas@" + u.pc.LocalAddr().String() + ">\r\n"
	ok := appendResponse(nil, m, 200, "OK", tag, true, contact, "application/sdp", sdpAnswer(u.host, m.body))
	out = appendResponse(out, m, 180, "Ringing", tag, true, contact, "", nil)
	c.last = append([]byte(nil), out...)
	if u.o.answerDelay > 0 {
		c.timer = time.AfterFunc(u.o.answerDelay, func() {
			sh.mu.Lock()
			if c.answered {
				sh.mu.Unlock()
				return
			}
			c.answered, c.last, c.nextRtx = true, ok, time.Now().Add(c.interval)
			sh.mu.Unlock()
			u.send(ok, from)
		})
		sh.mu.Unlock()
		u.send(out, from)
		return out
	}
	c.answered, c.last, c.nextRtx = true, ok, now.Add(c.interval)
	sh.mu.Unlock()
	u.send(out, from)
	u.send(ok, from)
	return out
}

// sweep retransmits unacknowledged 2xx (500 ms doubling to 4 s, for 32 s)
// and forgets calls that are over or abandoned.
func (u *uas) sweep(now time.Time) {
	var resend [][]byte
	var to []netip.AddrPort
	for i := range u.shards {
		sh := &u.shards[i]
		sh.mu.Lock()
		for id, c := range sh.calls {
			age := now.Sub(c.created)
			switch {
			case c.ended && now.Sub(c.endedAt) > 32*time.Second:
				delete(sh.calls, id)
			case c.ended:
			case c.canceled && age > 32*time.Second:
				delete(sh.calls, id)
			case c.answered && !c.acked && age > 32*time.Second:
				u.ackTimeout.Add(1)
				delete(sh.calls, id)
			case c.answered && !c.acked && !now.Before(c.nextRtx):
				resend, to = append(resend, c.last), append(to, c.addr)
				u.retrans200.Add(1)
				c.interval = min(2*c.interval, 4*time.Second)
				c.nextRtx = now.Add(c.interval)
			case c.acked && !c.byeDone && age > 64*time.Second:
				u.noBye.Add(1)
				delete(sh.calls, id)
			}
		}
		sh.mu.Unlock()
	}
	for i, b := range resend {
		u.send(b, to[i])
	}
}

func (u *uas) report() *report {
	rep := &report{}
	el := u.end.Sub(u.start)
	rep.add("mode", "mode", "uas")
	rep.add("listen", "listen", u.pc.LocalAddr().String())
	rep.add("elapsed_s", "served for", el)
	rep.add("invites", "INVITEs (new calls)", u.invites.Load())
	rep.add("acks", "ACKs", u.acks.Load())
	rep.add("byes", "BYEs", u.byes.Load())
	rep.add("options", "OPTIONS", u.options.Load())
	rep.add("cancels", "CANCELs", u.cancels.Load())
	rep.add("other_requests", "other requests (501)", u.others.Load())
	rep.add("invite_retransmissions", "INVITE retransmissions received", u.retransIn.Load())
	rep.add("retransmitted_200", "2xx retransmitted (ACK late)", u.retrans200.Load())
	rep.add("bye_before_ack", "BYE before its ACK", u.byeBeforeAck.Load())
	rep.add("bye_unknown_call", "BYE for no call (481)", u.byeUnknown.Load())
	rep.add("bye_retransmissions", "BYE retransmissions answered again", u.byeRetrans.Load())
	rep.add("ack_timeout", "2xx never ACKed (32 s)", u.ackTimeout.Load())
	rep.add("no_bye", "calls never ended by BYE (64 s)", u.noBye.Load())
	rep.add("malformed", "malformed datagrams", u.malformed.Load())
	rep.add("receive_buffer_bytes", "socket receive buffer", u.rcvbuf)
	return rep
}
