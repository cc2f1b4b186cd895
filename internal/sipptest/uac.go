package sipptest

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/sipptest/testproc"
)

// UACOptions configure RunUAC.
type UACOptions struct {
	// Remote is the host:port the calls are sent to. Required.
	Remote string
	// Scenario is a scenario file (base name in testdata/sipp, or a path).
	// Empty: SIPp's built-in "uac" (-sn uac).
	Scenario string
	// Transport is UDP (default), TCP or TLS.
	Transport Transport
	// TLSCertFile and TLSKeyFile: client certificate and key for TLS.
	TLSCertFile, TLSKeyFile string
	// Calls is the number of calls to place (-m). Default 1.
	Calls int
	// Rate is calls per second (-r). Default 10.
	Rate float64
	// Limit caps simultaneous calls (-l). 0: SIPp's default.
	Limit int
	// Service is the user part of the request URI (-s). Default "service".
	Service string
	// Timeout bounds the whole run: SIPp's -timeout (with -timeout_error)
	// and, 10 s later, the harness kills it and fails the test. Default 60 s.
	Timeout time.Duration
	// TraceMessages writes every message sent and received to a file
	// (-trace_msg), reported as UACResult.MessageLog.
	TraceMessages bool
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
}

// UACResult is the outcome of RunUAC.
type UACResult struct {
	// Successful and Failed are SIPp's SuccessfulCall(C) and FailedCall(C).
	Successful, Failed int
	// ExitCode is sipp's: 0 all calls successful, 1 at least one failed,
	// 97 exit on internal command, 99 normal exit without calls processed.
	ExitCode int
	// Stats is the final statistics row.
	Stats Stats
	// ErrorLog is the content of the -trace_err file (unexpected messages).
	ErrorLog string
	// MessageLog is the path of the message trace (TraceMessages only).
	MessageLog string
}

// RunUAC runs a SIPp UAC to completion on 127.0.0.1 and returns its counts.
// Failed calls are returned, not reported: the caller asserts. The test
// fails when SIPp cannot run, when it exits without a statistics row, or
// when it outlives its deadline.
func RunUAC(t testing.TB, opts UACOptions) UACResult {
	t.Helper()
	bin := Binary(t)
	if opts.Remote == "" {
		t.Fatal("sipptest: UACOptions.Remote is required")
	}
	if opts.Transport == "" {
		opts.Transport = UDP
	}
	if opts.Transport == TLS {
		RequireTLS(t)
	}
	if opts.Calls <= 0 {
		opts.Calls = 1
	}
	if opts.Rate <= 0 {
		opts.Rate = 10
	}
	if opts.Service == "" {
		opts.Service = "service"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 60 * time.Second
	}
	dir := t.TempDir()
	const attempts = 5
	for attempt := 1; ; attempt++ {
		port, err := testproc.FreePort(opts.Transport.network())
		if err != nil {
			t.Fatalf("sipptest: free port: %v", err)
		}
		name := outputName("uac")
		args := []string{opts.Remote}
		if opts.Scenario == "" {
			args = append(args, "-sn", "uac")
		} else {
			args = append(args, "-sf", ScenarioPath(opts.Scenario))
		}
		args = append(args,
			"-t", string(opts.Transport),
			"-i", "127.0.0.1", "-bind_local",
			"-p", strconv.Itoa(port),
			"-m", strconv.Itoa(opts.Calls),
			"-r", strconv.FormatFloat(opts.Rate, 'f', -1, 64),
			"-s", opts.Service,
			"-timeout", fmt.Sprintf("%dms", opts.Timeout.Milliseconds()), "-timeout_error",
		)
		if opts.Limit > 0 {
			args = append(args, "-l", strconv.Itoa(opts.Limit))
		}
		if opts.Transport == TLS && opts.TLSCertFile != "" {
			args = append(args, "-tls_cert", opts.TLSCertFile, "-tls_key", opts.TLSKeyFile)
		}
		var msgLog string
		if opts.TraceMessages {
			msgLog = dir + "/" + name + "_messages.log"
			args = append(args, "-trace_msg", "-message_file", msgLog)
		}
		args = append(args, opts.ExtraArgs...)
		p, err := startProcess(bin, dir, name, args)
		if err != nil {
			t.Fatalf("sipptest: %v", err)
		}
		if !p.wait(opts.Timeout + 10*time.Second) {
			p.stop(time.Second)
			t.Fatalf("sipptest: UAC still running %v after start; killed\n%s", opts.Timeout+10*time.Second, p.diagnostics())
		}
		if p.bindFailed() && attempt < attempts {
			t.Logf("sipptest: UAC port %d taken, retrying (%d/%d)", port, attempt, attempts)
			continue
		}
		st, err := readStats(p.stat)
		if err != nil {
			t.Fatalf("sipptest: UAC exited with code %d and no statistics: %v\n%s", p.exitCode(), err, p.diagnostics())
		}
		res := UACResult{
			Successful: st.SuccessfulCalls,
			Failed:     st.FailedCalls,
			ExitCode:   p.exitCode(),
			Stats:      st,
			ErrorLog:   readOptional(p.errLog),
			MessageLog: msgLog,
		}
		if res.ExitCode != 0 {
			t.Logf("sipptest: UAC exit code %d, %d successful, %d failed\n%s", res.ExitCode, res.Successful, res.Failed, p.diagnostics())
		}
		return res
	}
}
