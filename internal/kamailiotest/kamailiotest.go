// Package kamailiotest runs Kamailio (Debian packages kamailio and
// kamailio-tls-modules) in Go tests as a real SBC in front of the system
// under test: a SIP UAC (e.g. SIPp, see package sipptest) sends calls over
// UDP to Kamailio, which record-routes and relays every request with
// t_relay over mutual TLS to Options.NextHop, presenting a client
// certificate and verifying the next hop's certificate chain.
//
// Kamailio runs in the foreground (-DD -E) as a child process of the test,
// with its configuration, runtime directory, pid file and working directory
// in t.TempDir(), and is stopped at t.Cleanup. Its stderr is copied to the
// test log when the test fails.
//
// Version notes (Kamailio 5.6.3 as packaged by Debian 12, OpenSSL 3.0):
// the core parameter tls_threads_mode (the fix for OpenSSL 3 thread-local
// state initialised before fork, upstream issues #3635 and #3791) only
// exists from 5.7/5.8, so the configuration sets it only when the installed
// binary knows it (probed in its strings). The TLS client of 5.6 verifies
// the certificate chain but cannot check the server's host name: ServerName
// is sent as SNI only.
package kamailiotest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/sipptest/testproc"
)

// ModulesDir is where Debian installs Kamailio's modules.
const ModulesDir = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

// Options configure Start.
type Options struct {
	// NextHop is the SIP URI every initial request is relayed to, e.g.
	// "sip:127.0.0.1:5061;transport=tls". Required.
	NextHop string
	// ClientCertFile and ClientKeyFile are the certificate (chain) and key
	// that Kamailio presents to NextHop. Required for TLS next hops.
	ClientCertFile, ClientKeyFile string
	// CAFile verifies NextHop's certificate (verify_certificate=yes).
	// Required unless InsecureSkipVerify.
	CAFile string
	// InsecureSkipVerify turns server certificate verification off, to test
	// what the system under test does with such a peer.
	InsecureSkipVerify bool
	// ServerName is sent as SNI to NextHop ("" = none). Kamailio 5.6 does
	// not check it against the server certificate.
	ServerName string
	// Debug is Kamailio's log level (debug=): default 2 (info); 3 is debug.
	Debug int
	// StartTimeout bounds the wait for readiness. Default 15 s.
	StartTimeout time.Duration
}

// Kamailio is a running Kamailio.
type Kamailio struct {
	t       testing.TB
	cmd     *exec.Cmd
	done    chan struct{}
	dir     string
	stderr  *syncBuffer
	udpPort int
	tlsPort int
	once    sync.Once
}

// Binary returns the path of the kamailio executable, skipping the test
// when it or its TLS module is missing (failing it when CI=true).
func Binary(t testing.TB) string {
	t.Helper()
	bin := testproc.LookPath(t, "kamailio", "kamailio")
	if _, err := os.Stat(filepath.Join(ModulesDir, "tls.so")); err != nil {
		msg := "Kamailio TLS module missing (Debian package kamailio-tls-modules): " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s; CI=true", msg)
		}
		t.Skip(msg)
	}
	return bin
}

// Start writes kamailio.cfg and tls.cfg into t.TempDir(), runs Kamailio and
// returns once it is ready: its UDP and TLS ports are bound (read from
// /proc/net) and it answers an OPTIONS probe on UDP. The test fails, with
// Kamailio's stderr in the log, when it exits or is not ready in time.
func Start(t testing.TB, opts Options) *Kamailio {
	t.Helper()
	bin := Binary(t)
	if opts.NextHop == "" {
		t.Fatal("kamailiotest: Options.NextHop is required")
	}
	if !opts.InsecureSkipVerify && opts.CAFile == "" {
		t.Fatal("kamailiotest: Options.CAFile is required unless InsecureSkipVerify")
	}
	if opts.Debug == 0 {
		opts.Debug = 2
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 15 * time.Second
	}
	threadsMode := supportsThreadsMode(bin)
	const attempts = 5
	for attempt := 1; ; attempt++ {
		dir := t.TempDir()
		udpPort, err := testproc.FreePort("udp")
		if err != nil {
			t.Fatal(err)
		}
		tlsPort, err := testproc.FreePort("tcp")
		if err != nil {
			t.Fatal(err)
		}
		k := &Kamailio{t: t, done: make(chan struct{}), dir: dir, stderr: &syncBuffer{}, udpPort: udpPort, tlsPort: tlsPort}
		cfg := k.writeConfig(t, opts, threadsMode)
		run := filepath.Join(dir, "run")
		if err := os.Mkdir(run, 0o700); err != nil {
			t.Fatal(err)
		}
		k.cmd = exec.Command(bin, "-DD", "-E", "--atexit=no",
			"-f", cfg, "-Y", run, "-P", filepath.Join(run, "kamailio.pid"), "-w", dir,
			"-m", "64", "-M", "8")
		k.cmd.Dir = dir
		k.cmd.Stdout = k.stderr
		k.cmd.Stderr = k.stderr
		// Own process group: Stop signals Kamailio and all its children.
		k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := k.cmd.Start(); err != nil {
			t.Fatalf("kamailiotest: start: %v", err)
		}
		go func() {
			_ = k.cmd.Wait()
			close(k.done)
		}()
		err = k.waitReady(opts.StartTimeout)
		if err == nil {
			t.Cleanup(func() {
				k.Stop()
				if t.Failed() {
					t.Logf("kamailiotest: kamailio stderr:\n%s", k.Log())
				}
			})
			return k
		}
		k.Stop()
		log := k.Log()
		if strings.Contains(log, "Address already in use") && attempt < attempts {
			t.Logf("kamailiotest: port taken, retrying (%d/%d)", attempt, attempts)
			continue
		}
		t.Fatalf("kamailiotest: kamailio not ready: %v\n--- kamailio.cfg:\n%s\n--- stderr:\n%s", err, readFile(cfg), tail(log, 8000))
	}
}

func (k *Kamailio) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	pid := k.cmd.Process.Pid
	if err := testproc.WaitBound(pid, "udp", k.udpPort, k.done, time.Until(deadline)); err != nil {
		return fmt.Errorf("UDP %d: %w", k.udpPort, err)
	}
	if err := testproc.WaitBound(pid, "tcp", k.tlsPort, k.done, time.Until(deadline)); err != nil {
		return fmt.Errorf("TLS %d: %w", k.tlsPort, err)
	}
	return k.probe(deadline)
}

// probe sends OPTIONS over UDP until Kamailio's workers answer 200, so the
// test starts against processes that are running, not just bound sockets.
func (k *Kamailio) probe(deadline time.Time) error {
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: k.udpPort})
	if err != nil {
		return err
	}
	defer c.Close()
	local := c.LocalAddr().String()
	buf := make([]byte, 4096)
	for i := 0; time.Now().Before(deadline) && i < 1000; i++ {
		select {
		case <-k.done:
			return testproc.ErrExited
		default:
		}
		msg := fmt.Sprintf("OPTIONS sip:127.0.0.1:%d SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP %s;branch=z9hG4bK-probe-%d;rport\r\n"+
			"From: <sip:probe@%s>;tag=probe\r\nTo: <sip:127.0.0.1:%d>\r\n"+
			"Call-ID: kamailiotest-probe-%d@%s\r\nCSeq: %d OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
			k.udpPort, local, i, local, k.udpPort, i, local, i+1)
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil && bytes.HasPrefix(buf[:n], []byte("SIP/2.0 200")) {
			return nil
		}
	}
	return fmt.Errorf("no answer to OPTIONS on UDP %d before the deadline", k.udpPort)
}

// UDPAddr returns the UDP listener (host:port) that a SIPp UAC calls.
func (k *Kamailio) UDPAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.udpPort))
}

// TLSAddr returns Kamailio's TLS listener (host:port). Kamailio sends to
// NextHop from it, and it takes in-dialog requests coming back from the
// TLS side (e.g. a BYE from the callee), which are loose-routed.
func (k *Kamailio) TLSAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.tlsPort))
}

// Dir returns the directory holding kamailio.cfg and tls.cfg.
func (k *Kamailio) Dir() string { return k.dir }

// Log returns what Kamailio wrote to stderr so far.
func (k *Kamailio) Log() string { return k.stderr.String() }

// Stop terminates Kamailio (SIGTERM to its process group, then SIGKILL
// after 5 s) and waits for it. Safe to call more than once.
func (k *Kamailio) Stop() {
	k.once.Do(func() {
		pgid := k.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		tm := time.NewTimer(5 * time.Second)
		defer tm.Stop()
		select {
		case <-k.done:
		case <-tm.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			tm2 := time.NewTimer(5 * time.Second)
			defer tm2.Stop()
			select {
			case <-k.done:
			case <-tm2.C:
				k.t.Errorf("kamailiotest: kamailio (pid %d) did not exit after SIGKILL", pgid)
			}
		}
		// Children left behind by a killed main process.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// supportsThreadsMode reports whether the kamailio binary knows the core
// parameter tls_threads_mode (Kamailio >= 5.7.2 / 5.8).
func supportsThreadsMode(bin string) bool {
	b, err := os.ReadFile(bin)
	return err == nil && bytes.Contains(b, []byte("tls_threads_mode"))
}

func (k *Kamailio) writeConfig(t testing.TB, opts Options, threadsMode bool) string {
	t.Helper()
	tlsCfg := filepath.Join(k.dir, "tls.cfg")
	verify := "yes"
	if opts.InsecureSkipVerify {
		verify = "no"
	}
	var tb strings.Builder
	// The server profile only serves in-dialog requests coming back from
	// the TLS side; it presents the same certificate and asks for none.
	fmt.Fprintf(&tb, "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n")
	if opts.ClientCertFile != "" {
		fmt.Fprintf(&tb, "certificate = %q\nprivate_key = %q\n", opts.ClientCertFile, opts.ClientKeyFile)
	}
	fmt.Fprintf(&tb, "\n[client:default]\nmethod = TLSv1.2+\nverify_certificate = %s\nrequire_certificate = %s\nverify_depth = 5\n", verify, verify)
	if opts.ClientCertFile != "" {
		fmt.Fprintf(&tb, "certificate = %q\nprivate_key = %q\n", opts.ClientCertFile, opts.ClientKeyFile)
	}
	if opts.CAFile != "" {
		fmt.Fprintf(&tb, "ca_list = %q\n", opts.CAFile)
	}
	if err := os.WriteFile(tlsCfg, []byte(tb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	threads := "# tls_threads_mode: not supported by this Kamailio version\n"
	if threadsMode {
		threads = "tls_threads_mode=1\n"
	}
	// Kamailio 5.6 sends SNI only from the tls xavp set before t_relay
	// (a server_name in a client profile only selects that profile).
	sni := "# no SNI"
	if opts.ServerName != "" {
		sni = fmt.Sprintf("$xavp(tls=>server_name) = %q;", opts.ServerName)
	}
	cfg := fmt.Sprintf(cfgTemplate, opts.Debug, threads, k.udpPort, k.tlsPort, ModulesDir, tlsCfg, opts.NextHop, sni)
	p := filepath.Join(k.dir, "kamailio.cfg")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const cfgTemplate = `#!KAMAILIO
# Written by internal/kamailiotest: an SBC that relays UDP calls over TLS.
debug=%d
log_stderror=yes
log_prefix=""
children=2
tcp_children=2
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=no
enable_tls=yes
tcp_connect_timeout=5
tcp_connection_lifetime=3600
%s
listen=udp:127.0.0.1:%d
listen=tls:127.0.0.1:%d

mpath="%s"
loadmodule "tls.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "corex.so"

modparam("tls", "config", "%s")
modparam("tls", "xavp_cfg", "tls")
modparam("rr", "enable_full_lr", 1)
modparam("rr", "enable_double_rr", 1)
modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)

request_route {
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	# Readiness probe and keepalives addressed to us.
	if (is_method("OPTIONS") && uri==myself && $rU==$null) {
		sl_send_reply("200", "Keepalive");
		exit;
	}
	if (has_totag()) {
		# In-dialog: follow the Route set (loose routing).
		if (loose_route()) {
			route(RELAY);
		}
		if (is_method("ACK")) {
			if (t_check_trans()) {
				t_relay();
			}
			exit;
		}
		sl_send_reply("404", "Not here");
		exit;
	}
	if (is_method("CANCEL")) {
		if (t_check_trans()) {
			route(RELAY);
		}
		exit;
	}
	# Absorb retransmissions of requests already being relayed.
	t_check_trans();
	remove_hf("Route");
	record_route();
	$du = "%s";
	route(RELAY);
}

route[RELAY] {
	%s
	if (!t_relay()) {
		xlog("L_ERR", "kamailiotest: t_relay of $rm $ci to $du$ru failed\n");
		sl_reply_error();
	}
	exit;
}
`

// syncBuffer is a bytes.Buffer safe for the writer goroutines of exec.Cmd
// and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
