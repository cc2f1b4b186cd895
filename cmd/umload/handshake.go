package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// cmdHandshake measures new connections: each iteration opens a TCP
// connection, completes a mutual TLS handshake, sends one OPTIONS to the
// server itself (no user part: the proxy answers 200), reads the answer
// and closes.
func cmdHandshake(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("handshake", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	workers := fs.Int("c", 4, "connections being opened concurrently")
	total := fs.Int("n", 20000, "open at most `N` connections")
	dur := fs.Duration("d", 20*time.Second, "open connections for at most `D`")
	resume := fs.Bool("resume", false, "offer TLS session resumption (tickets from earlier connections of this run)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "usage: umload handshake [flags]\n\nOne new mutual-TLS connection per OPTIONS; bounded by -n and -d.\n\n")
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
	case *workers < 1 || *workers > 10000:
		err = errors.New("-c: between 1 and 10000")
	case *total < 1 || *total > maxTotal:
		err = fmt.Errorf("-n: between 1 and %d", maxTotal)
	case *dur <= 0 || *dur > maxDuration:
		err = fmt.Errorf("-d: between 0 and %s", maxDuration)
	}
	if err != nil {
		fmt.Fprintln(stderr, "umload handshake:", err)
		return 2
	}
	if *resume {
		tlsConf.ClientSessionCache = tls.NewLRUClientSessionCache(1024)
	}
	h := &handshakeRun{cf: &cf, conf: tlsConf, total: int64(*total)}
	rep := h.run(*workers, *dur, *resume)
	cf.stopProfile()
	if err := rep.print(stdout, cf.quiet); err != nil {
		fmt.Fprintln(stderr, "umload handshake:", err)
		return 1
	}
	if h.ok.Load() == 0 || h.failed.Load() > 0 {
		return 1
	}
	return 0
}

type handshakeRun struct {
	cf      *clientFlags
	conf    *tls.Config
	total   int64
	started atomic.Int64
	ok      atomic.Int64
	failed  atomic.Int64
	resumed atomic.Int64
	fails   reasons
}

func (h *handshakeRun) run(workers int, dur time.Duration, resume bool) *report {
	cpuw := startCPU(h.cf.procs, h.cf.others)
	start := time.Now()
	stopAt := start.Add(dur)
	prog := startProgress(func() string {
		el := time.Since(start)
		return fmt.Sprintf("connections %d ok %d failed %d  %.0f/s  %s", h.started.Load(), h.ok.Load(), h.failed.Load(),
			perSecond(h.ok.Load(), el), el.Round(time.Second))
	})
	hs := make([]histogram, workers)   // connect + handshake
	full := make([]histogram, workers) // until the OPTIONS answer
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var msg message
			var buf []byte
			for seq := 0; ; seq++ {
				now := time.Now()
				if now.After(stopAt) || h.started.Add(1) > h.total {
					return
				}
				buf = h.one(now, w, seq, &hs[w], &full[w], &msg, buf)
			}
		}()
	}
	wg.Wait()
	prog.end()
	elapsed := time.Since(start)
	spent := cpuw.stop()
	var hh, hf histogram
	for i := range hs {
		hh.merge(&hs[i])
		hf.merge(&full[i])
	}
	ok := h.ok.Load()
	rep := &report{}
	rep.add("mode", "mode", "handshake")
	rep.add("target", "target", h.cf.target)
	rep.add("tls", "TLS version", h.cf.tlsVersion)
	rep.add("concurrency", "concurrent connects", workers)
	rep.add("resume", "session resumption offered", resume)
	rep.add("connections_ok", "connections (handshake + OPTIONS 200)", ok)
	rep.add("connections_failed", "connections failed", h.failed.Load())
	rep.add("failures", "failures by reason", h.fails.snapshot())
	rep.add("resumed", "resumed sessions", h.resumed.Load())
	rep.add("elapsed_s", "elapsed", elapsed)
	rep.add("handshakes_per_s", "handshakes/s", perSecond(ok, elapsed))
	rep.add("handshake_ms", "connect + handshake", hh.summary())
	rep.add("options_ms", "connect to OPTIONS 200", hf.summary())
	spent.add(rep, h.cf.procs, h.cf.others)
	if h.cf.procs.enabled() {
		rep.add("target_cpu_ms_per_handshake", "target CPU per connection (ms)", perUnit(spent.target, ok, time.Millisecond))
	}
	rep.add("load_cpu_ms_per_handshake", "umload CPU per connection (ms)", perUnit(spent.self, ok, time.Millisecond))
	return rep
}

// one opens one connection, asks OPTIONS and closes.
func (h *handshakeRun) one(start time.Time, w, seq int, hs, full *histogram, msg *message, buf []byte) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), h.cf.dialTimeout)
	defer cancel()
	tc, err := h.cf.dial(ctx, h.conf)
	if err != nil {
		h.fail(errReason("handshake", err))
		return buf
	}
	defer tc.Close()
	hs.add(time.Since(start))
	if tc.ConnectionState().DidResume {
		h.resumed.Add(1)
	}
	local := tc.LocalAddr().String()
	id := strconv.Itoa(w) + "." + strconv.Itoa(seq) + "." + strconv.FormatInt(start.UnixNano(), 36)
	buf = appendRequest(buf[:0], &requestParams{
		method: "OPTIONS", ruri: "sip:" + h.cf.domain,
		via:  "SIP/2.0/TLS " + local + ";rport;branch=z9hG4bKhs" + id,
		from: "<sip:umload@" + local + ">;tag=" + id, to: "<sip:" + h.cf.domain + ">",
		callID: id + "@umload", cseq: 1,
	})
	deadline, _ := ctx.Deadline()
	_ = tc.SetDeadline(deadline)
	if _, err := tc.Write(buf); err != nil {
		h.fail(errReason("options_write", err))
		return buf
	}
	frame, err := newStreamReader(tc).next()
	if err != nil {
		h.fail(errReason("options_read", err))
		return buf
	}
	if err := msg.parse(frame); err != nil || msg.request {
		h.fail("options_malformed_answer")
		return buf
	}
	if msg.code != 200 {
		h.fail("options_" + strconv.Itoa(msg.code))
		return buf
	}
	full.add(time.Since(start))
	h.ok.Add(1)
	return buf
}

func (h *handshakeRun) fail(reason string) {
	h.failed.Add(1)
	h.fails.add(reason)
}
