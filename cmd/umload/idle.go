package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// cmdIdle opens K mutual-TLS connections, proves each with one OPTIONS
// (so the server has identified the peer and set the connection up as for
// real traffic), then holds them for D, sending a CRLFCRLF keep-alive
// (RFC 5626 §4.4.1) every -keepalive. With -pids it reports the server's
// memory per connection: the PSS growth from before the first connection
// to -settle after the last, divided by K.
func cmdIdle(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	k := fs.Int("c", 1000, "connections to open and hold")
	dur := fs.Duration("d", 30*time.Second, "hold the connections for `D` after the last one opened")
	keepalive := fs.Duration("keepalive", 30*time.Second, "CRLFCRLF keep-alive interval per connection")
	settle := fs.Duration("settle", 3*time.Second, "wait after the last connection before measuring memory")
	parallel := fs.Int("connect-parallel", 32, "TLS handshakes in parallel while connecting")
	probe := fs.Bool("probe", true, "send one OPTIONS on each connection and require 200")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: umload idle [flags]\n\nOpen and hold K mutual-TLS connections (memory per connection with -pids).\n\n")
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
	switch {
	case err != nil:
	case *k < 1 || *k > 1000000:
		err = errors.New("-c: between 1 and 1000000")
	case *dur < 0 || *dur > maxDuration:
		err = fmt.Errorf("-d: between 0 and %s", maxDuration)
	case *keepalive < time.Second:
		err = errors.New("-keepalive: at least 1s")
	case *parallel < 1:
		err = errors.New("-connect-parallel: at least 1")
	}
	if err != nil {
		fmt.Fprintln(stderr, "umload idle:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ir := &idleRun{cf: &cf, conf: tlsConf, stderr: stderr}
	rep := ir.run(ctx, *k, *parallel, *probe, *settle, *dur, *keepalive)
	cf.stopProfile()
	if err := rep.print(stdout, cf.quiet); err != nil {
		fmt.Fprintln(stderr, "umload idle:", err)
		return 1
	}
	if ir.failed.Load() > 0 || ir.lost.Load() > 0 {
		return 1
	}
	return 0
}

type idleRun struct {
	stderr io.Writer
	cf     *clientFlags
	conf   *tls.Config
	opened atomic.Int64
	failed atomic.Int64
	lost   atomic.Int64 // closed by the server while held
	fails  reasons
}

func (ir *idleRun) run(ctx context.Context, k, parallel int, probe bool, settle, hold, keepalive time.Duration) *report {
	pss0, rss0 := ir.cf.procs.memory()
	start := time.Now()
	prog := startProgress(func() string {
		return fmt.Sprintf("connections %d/%d failed %d lost %d  %s", ir.opened.Load(), k, ir.failed.Load(), ir.lost.Load(),
			time.Since(start).Round(time.Second))
	})
	conns := make([]*tls.Conn, k)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conns[i] = ir.open(i, probe)
		}()
	}
	wg.Wait()
	connectTime := time.Since(start)
	// One reader per connection notices a server that closes it.
	closing := atomic.Bool{}
	var readers sync.WaitGroup
	for _, tc := range conns {
		if tc == nil {
			continue
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			_, _ = io.Copy(io.Discard, tc)
			if !closing.Load() {
				ir.lost.Add(1)
			}
		}()
	}
	sleepCtx(ctx, settle)
	pss1, rss1 := ir.cf.procs.memory()
	cpuHold0 := ir.cf.procs.cpu()
	// A line for scripts that run load beside the held connections.
	fmt.Fprintf(ir.stderr, "umload idle: %d connections open, holding for %s\n", ir.opened.Load(), hold)
	holdStart := time.Now()
	ir.keepAlive(ctx, conns, hold, keepalive)
	hold = time.Since(holdStart)
	cpuHold1 := ir.cf.procs.cpu()
	pss2, _ := ir.cf.procs.memory()
	prog.end()
	closing.Store(true)
	for _, tc := range conns {
		if tc != nil {
			tc.Close()
		}
	}
	readers.Wait()

	opened := ir.opened.Load()
	rep := &report{}
	rep.add("mode", "mode", "idle")
	rep.add("target", "target", ir.cf.target)
	rep.add("connections", "connections held", opened)
	rep.add("connections_failed", "connections failed", ir.failed.Load())
	rep.add("failures", "failures by reason", ir.fails.snapshot())
	rep.add("connections_lost", "closed by the server while held", ir.lost.Load())
	rep.add("connect_s", "time to open them", connectTime)
	rep.add("hold_s", "held for", hold)
	if ir.cf.procs.enabled() {
		rep.add("target_pss_before_kib", "target PSS before (KiB)", pss0)
		rep.add("target_pss_kib", "target PSS with the connections (KiB)", pss1)
		rep.add("target_pss_end_kib", "target PSS at the end of the hold (KiB)", pss2)
		rep.add("target_rss_kib", "target RSS with the connections (KiB)", rss1)
		rep.add("target_pss_kib_per_conn", "target PSS per connection (KiB)", perConn(pss1-pss0, opened))
		rep.add("target_rss_kib_per_conn", "target RSS per connection (KiB)", perConn(rss1-rss0, opened))
		rep.add("target_cpu_hold_s", "target CPU while holding", cpuHold1-cpuHold0)
	}
	return rep
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func perConn(kib, n int64) float64 {
	if n == 0 {
		return 0
	}
	return float64(kib) / float64(n)
}

// open connects and, with probe, proves the connection with OPTIONS.
func (ir *idleRun) open(i int, probe bool) *tls.Conn {
	tc, err := ir.cf.dial(context.Background(), ir.conf)
	if err != nil {
		ir.failed.Add(1)
		ir.fails.add(errReason("connect", err))
		return nil
	}
	if probe {
		local := tc.LocalAddr().String()
		id := "idle." + strconv.Itoa(i) + "." + strconv.FormatInt(time.Now().UnixNano(), 36)
		req := appendRequest(nil, &requestParams{
			method: "OPTIONS", ruri: "sip:" + ir.cf.domain,
			via:  "SIP/2.0/TLS " + local + ";rport;branch=z9hG4bK" + id,
			from: "<sip:umload@" + local + ">;tag=" + id, to: "<sip:" + ir.cf.domain + ">",
			callID: id + "@umload", cseq: 1,
		})
		_ = tc.SetDeadline(time.Now().Add(ir.cf.dialTimeout))
		var msg message
		_, err := tc.Write(req)
		var frame []byte
		if err == nil {
			frame, err = newStreamReader(tc).next()
		}
		if err == nil {
			err = msg.parse(frame)
		}
		_ = tc.SetDeadline(time.Time{})
		if err != nil || msg.request || msg.code != 200 {
			reason := "probe_malformed"
			switch {
			case err != nil:
				reason = errReason("probe", err)
			case !msg.request:
				reason = "probe_" + strconv.Itoa(msg.code)
			}
			ir.failed.Add(1)
			ir.fails.add(reason)
			tc.Close()
			return nil
		}
	}
	ir.opened.Add(1)
	return tc
}

// keepAlive holds the connections for hold, writing CRLFCRLF on each
// every keepalive, spread evenly over the interval.
func (ir *idleRun) keepAlive(ctx context.Context, conns []*tls.Conn, hold, keepalive time.Duration) {
	var live []*tls.Conn
	for _, tc := range conns {
		if tc != nil {
			live = append(live, tc)
		}
	}
	if len(live) == 0 {
		sleepCtx(ctx, hold)
		return
	}
	step := keepalive / time.Duration(len(live))
	if step < time.Millisecond {
		step = time.Millisecond
	}
	tick := time.NewTicker(step)
	defer tick.Stop()
	perTick := int(int64(len(live)) * int64(step) / int64(keepalive))
	if perTick < 1 {
		perTick = 1
	}
	next := 0
	stopAt := time.NewTimer(hold)
	defer stopAt.Stop()
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case <-stopAt.C:
			return
		case now = <-tick.C:
		}
		for range perTick {
			tc := live[next%len(live)]
			next++
			_ = tc.SetWriteDeadline(now.Add(time.Second))
			_, _ = tc.Write([]byte("\r\n\r\n"))
		}
	}
}
