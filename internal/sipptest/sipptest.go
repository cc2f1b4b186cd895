// Package sipptest runs SIPp (Debian package sip-tester) as a real
// third-party SIP peer in Go tests: a backend UAS that umrouter forwards calls
// to (StartUAS), and a load-generating UAC (RunUAC).
//
// SIPp always runs in the foreground as a child process of the test (never
// with -bg), on 127.0.0.1, with -nostdin, -trace_err and a -timeout guard,
// and is killed at t.Cleanup at the latest.
//
// Call counting: SIPp is started with -trace_stat and a statistics file in
// the test's temporary directory, dumped every 100 ms (-fd 100ms) and once
// more when SIPp exits. The counters read are the cumulative columns
// SuccessfulCall(C) and FailedCall(C) of the last complete row. A UAS counts
// a call as successful when its scenario ran to the end (for the built-in
// "uas" scenario that is 4 s after the BYE, because of its timewait; the
// UAS scenario files in testdata/sipp end on the last message, with no
// timewait, so that a UAC closing its TCP connection right after the last
// call does not fail the UAS's last call).
//
// Scenario files live in testdata/sipp at the module root; pass their base
// name (e.g. "uas_503.xml") and ScenarioPath finds them.
package sipptest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/sipptest/testproc"
)

// Transport is a SIPp transport mode (the -t option).
type Transport string

// Transports supported by the harness.
const (
	UDP Transport = "u1" // UDP, one socket (SIPp's default)
	TCP Transport = "t1" // TCP, one connection
	TLS Transport = "l1" // TLS, one connection; needs a SIPp built with OpenSSL
)

func (tr Transport) network() string {
	if tr == UDP || tr == "" {
		return "udp"
	}
	return "tcp"
}

// Stats are the cumulative counters of one row of SIPp's statistics file.
type Stats struct {
	IncomingCalls    int // IncomingCall(C): calls received (UAS)
	OutgoingCalls    int // OutgoingCall(C): calls placed (UAC)
	TotalCallCreated int // TotalCallCreated
	CurrentCalls     int // CurrentCall: calls in progress
	SuccessfulCalls  int // SuccessfulCall(C): scenario ran to its end
	FailedCalls      int // FailedCall(C): all failure reasons
}

// Binary returns the path of the sipp executable, skipping the test when it
// is missing (failing it when CI=true).
func Binary(t testing.TB) string {
	t.Helper()
	return testproc.LookPath(t, "sipp", "sip-tester")
}

// SupportsTLS reports whether the installed sipp was built with OpenSSL. The
// Debian package is not (its version string lacks "TLS"), so transport l1
// is unavailable there.
func SupportsTLS(t testing.TB) bool {
	t.Helper()
	out, _ := exec.Command(Binary(t), "-v").CombinedOutput()
	return strings.Contains(string(out), "-TLS")
}

// RequireTLS skips the test (fails it when CI=true) when sipp lacks TLS.
func RequireTLS(t testing.TB) {
	t.Helper()
	if SupportsTLS(t) {
		return
	}
	msg := "sipp was built without TLS support (transport l1 unavailable; Debian's sip-tester has none)"
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; CI=true", msg)
	}
	t.Skip(msg)
}

// ScenarioDir returns the absolute path of the module's testdata/sipp.
func ScenarioDir() string {
	if _, file, _, ok := runtime.Caller(0); ok {
		d := filepath.Join(filepath.Dir(file), "..", "..", "testdata", "sipp")
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d
		}
	}
	// Fall back to walking up from the working directory to go.mod.
	dir, _ := os.Getwd()
	for range 10 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "testdata", "sipp")
		}
		dir = filepath.Dir(dir)
	}
	return filepath.Join("testdata", "sipp")
}

// ScenarioPath resolves a scenario name: an absolute path or a path that
// exists is returned as is, otherwise the name is looked up in ScenarioDir.
func ScenarioPath(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	if _, err := os.Stat(name); err == nil {
		abs, _ := filepath.Abs(name)
		return abs
	}
	return filepath.Join(ScenarioDir(), name)
}

// process is one running sipp child.
type process struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done
	dir     string
	stat    string // statistics file
	errLog  string // -trace_err file
	stderr  string // stderr capture
	stdout  string // screen output capture
}

// startProcess starts sipp with args in dir, its outputs going to files.
func startProcess(bin, dir, name string, args []string) (*process, error) {
	p := &process{
		done:   make(chan struct{}),
		dir:    dir,
		stat:   filepath.Join(dir, name+"_stat.csv"),
		errLog: filepath.Join(dir, name+"_errors.log"),
		stderr: filepath.Join(dir, name+"_stderr.log"),
		stdout: filepath.Join(dir, name+"_screen.log"),
	}
	for _, f := range []string{p.stat, p.errLog} {
		os.Remove(f) // a retry must not read a previous attempt's file
	}
	args = append(args,
		"-nostdin",
		"-trace_err", "-error_file", p.errLog,
		"-trace_stat", "-stf", p.stat, "-fd", "100ms",
	)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	outF, err := os.Create(p.stdout)
	if err != nil {
		return nil, err
	}
	errF, err := os.Create(p.stderr)
	if err != nil {
		outF.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = outF, errF
	if err := cmd.Start(); err != nil {
		outF.Close()
		errF.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p.cmd = cmd
	go func() {
		p.waitErr = cmd.Wait()
		outF.Close()
		errF.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is valid after done; -1 when killed by a signal.
func (p *process) exitCode() int {
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// wait waits for exit up to timeout; reports whether it exited.
func (p *process) wait(timeout time.Duration) bool {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case <-p.done:
		return true
	case <-tm.C:
		return false
	}
}

// stop asks sipp to finish (SIGUSR1: no new calls, exit when the current
// ones end), then asks again, then kills it. Every step is bounded.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGUSR1)
	if p.wait(grace) {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGUSR1)
	if p.wait(2 * time.Second) {
		return
	}
	_ = p.cmd.Process.Kill()
	p.wait(5 * time.Second)
}

// bindFailed reports whether the (exited) sipp failed to bind its socket.
func (p *process) bindFailed() bool {
	if p.exitCode() == 254 { // sipp's "fatal error binding a socket" (-2)
		return true
	}
	b, _ := os.ReadFile(p.stderr)
	s := strings.ToLower(string(b))
	return strings.Contains(s, "address already in use") || strings.Contains(s, "unable to bind")
}

// diagnostics returns the tails of stderr and of the error log.
func (p *process) diagnostics() string {
	return fmt.Sprintf("sipp %s\n--- stderr:\n%s\n--- error log (-trace_err):\n%s",
		strings.Join(p.cmd.Args[1:], " "), testproc.Tail(p.stderr, 4000), testproc.Tail(p.errLog, 4000))
}

// readStats parses the last complete row of the statistics file.
func readStats(path string) (Stats, error) {
	f, err := os.Open(path)
	if err != nil {
		return Stats{}, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var header []string
	var last []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			break // an incomplete last line is ignored
		}
		cols := strings.Split(strings.TrimRight(line, "\r\n"), ";")
		if header == nil {
			header = cols
			continue
		}
		if len(cols) >= len(header)-1 {
			last = cols
		}
	}
	if header == nil || last == nil {
		return Stats{}, errors.New("sipptest: no statistics row yet in " + path)
	}
	get := func(name string) int {
		for i, h := range header {
			if h == name && i < len(last) {
				n, _ := strconv.Atoi(strings.TrimSpace(last[i]))
				return n
			}
		}
		return 0
	}
	return Stats{
		IncomingCalls:    get("IncomingCall(C)"),
		OutgoingCalls:    get("OutgoingCall(C)"),
		TotalCallCreated: get("TotalCallCreated"),
		CurrentCalls:     get("CurrentCall"),
		SuccessfulCalls:  get("SuccessfulCall(C)"),
		FailedCalls:      get("FailedCall(C)"),
	}, nil
}

// outputName is the base of a process's output files in its directory.
var (
	seqMu sync.Mutex
	seq   int
)

func outputName(kind string) string {
	seqMu.Lock()
	defer seqMu.Unlock()
	seq++
	return fmt.Sprintf("%s%d", kind, seq)
}

// readOptional returns the file's content, or "" when it does not exist.
func readOptional(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}
