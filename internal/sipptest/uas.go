package sipptest

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/sipptest/testproc"
)

// UASOptions configure StartUAS. The zero value runs SIPp's built-in "uas"
// scenario over UDP.
type UASOptions struct {
	// Scenario is a scenario file (base name in testdata/sipp, or a path).
	// Empty: SIPp's built-in "uas" (-sn uas).
	Scenario string
	// Transport is UDP (default), TCP or TLS.
	Transport Transport
	// TLSCertFile and TLSKeyFile are the server certificate and key for TLS
	// (-tls_cert/-tls_key). Required with Transport TLS.
	TLSCertFile, TLSKeyFile string
	// Timeout is SIPp's own global guard (-timeout): it quits after this
	// long whatever happens. Default 5 minutes.
	Timeout time.Duration
	// StartTimeout bounds the wait for the port to be bound. Default 10 s.
	StartTimeout time.Duration
	// StopGrace is how long Stop waits for calls in progress to end after
	// asking SIPp to quit, before forcing it. Default 6 s.
	StopGrace time.Duration
	// ExtraArgs are appended to the command line (e.g. "-key", "k", "v").
	ExtraArgs []string
	// Port, when not 0, is the port to bind (to restart a UAS where it was);
	// otherwise a free one is chosen.
	Port int
}

// UAS is a running SIPp UAS.
type UAS struct {
	t     testing.TB
	opts  UASOptions
	p     *process
	port  int
	once  sync.Once
	final Stats
	ferr  error
}

// StartUAS starts a SIPp UAS on 127.0.0.1 at a free port and returns once
// the port is bound (read from /proc/net). The test fails when SIPp cannot
// start; it is stopped at t.Cleanup, and its stderr and error log are
// written to the test log when the test failed.
func StartUAS(t testing.TB, opts UASOptions) *UAS {
	t.Helper()
	bin := Binary(t)
	if opts.Transport == "" {
		opts.Transport = UDP
	}
	if opts.Transport == TLS {
		RequireTLS(t)
		if opts.TLSCertFile == "" || opts.TLSKeyFile == "" {
			t.Fatal("sipptest: TLS UAS needs TLSCertFile and TLSKeyFile")
		}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 10 * time.Second
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 6 * time.Second
	}
	dir := t.TempDir()
	u := &UAS{t: t, opts: opts}
	const attempts = 5
	for attempt := 1; ; attempt++ {
		port, err := opts.Port, error(nil)
		if port == 0 {
			port, err = testproc.FreePort(opts.Transport.network())
		}
		if err != nil {
			t.Fatalf("sipptest: free port: %v", err)
		}
		args := []string{}
		if opts.Scenario == "" {
			args = append(args, "-sn", "uas")
		} else {
			args = append(args, "-sf", ScenarioPath(opts.Scenario))
		}
		args = append(args,
			"-t", string(opts.Transport),
			"-i", "127.0.0.1", "-bind_local",
			"-p", strconv.Itoa(port),
			"-timeout", fmt.Sprintf("%dms", opts.Timeout.Milliseconds()),
			// A UM server answers OPTIONS: umrouter's health probes must not
			// count as failed calls in the scenario.
			"-aa",
		)
		if opts.Transport == TLS {
			args = append(args, "-tls_cert", opts.TLSCertFile, "-tls_key", opts.TLSKeyFile)
		}
		args = append(args, opts.ExtraArgs...)
		p, err := startProcess(bin, dir, outputName("uas"), args)
		if err != nil {
			t.Fatalf("sipptest: %v", err)
		}
		err = testproc.WaitBound(p.cmd.Process.Pid, opts.Transport.network(), port, p.done, opts.StartTimeout)
		if err == nil {
			u.p, u.port = p, port
			break
		}
		p.stop(time.Second)
		if errors.Is(err, testproc.ErrExited) && p.bindFailed() && attempt < attempts && opts.Port == 0 {
			t.Logf("sipptest: port %d taken, retrying (%d/%d)", port, attempt, attempts)
			continue
		}
		t.Fatalf("sipptest: UAS did not start: %v\n%s", err, p.diagnostics())
	}
	t.Cleanup(func() {
		u.Stop()
		if t.Failed() {
			t.Logf("sipptest: UAS %s diagnostics:\n%s", u.Addr(), u.p.diagnostics())
		}
	})
	return u
}

// Addr returns the UAS address as host:port (127.0.0.1:port).
func (u *UAS) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(u.port)) }

// Port returns the UAS port.
func (u *UAS) Port() int { return u.port }

// Transport returns the UAS transport.
func (u *UAS) Transport() Transport { return u.opts.Transport }

// Stats returns the latest statistics row (at most ~100 ms old while SIPp
// runs, final after Stop).
func (u *UAS) Stats() (Stats, error) { return readStats(u.p.stat) }

// WaitSuccessful waits until the UAS has completed at least n calls
// successfully, up to timeout. It returns the last statistics read and an
// error when the deadline passed or SIPp exited first.
func (u *UAS) WaitSuccessful(n int, timeout time.Duration) (Stats, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := u.Stats()
		if err == nil && st.SuccessfulCalls >= n {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("sipptest: UAS completed %d of %d calls within %v (failed %d)", st.SuccessfulCalls, n, timeout, st.FailedCalls)
		}
		select {
		case <-u.p.done:
			st, _ = u.Stats()
			if st.SuccessfulCalls >= n {
				return st, nil
			}
			return st, fmt.Errorf("sipptest: UAS exited (code %d) after %d of %d calls", u.p.exitCode(), st.SuccessfulCalls, n)
		case <-tick.C:
		}
	}
}

// Stop ends the UAS (SIPp quits after the calls in progress, bounded by
// StopGrace, then it is killed) and returns its final statistics: use
// Stop().SuccessfulCalls as the number of calls it completed. Safe to call
// more than once; later calls return the same result.
func (u *UAS) Stop() Stats {
	u.once.Do(func() {
		u.p.stop(u.opts.StopGrace)
		u.final, u.ferr = readStats(u.p.stat)
	})
	return u.final
}

// ErrorLog returns SIPp's -trace_err log (unexpected messages), if any.
func (u *UAS) ErrorLog() string { return readOptional(u.p.errLog) }
