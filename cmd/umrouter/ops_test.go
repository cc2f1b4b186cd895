package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/umrouter/umrouter/internal/sipptest"
	"github.com/umrouter/umrouter/internal/testpki"
	"github.com/umrouter/umrouter/tlsmgr"
)

// promtoolPath returns Prometheus' promtool (Debian package prometheus),
// skipping when it is missing unless CI is "true".
func promtoolPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("promtool not found (Debian package prometheus); CI=true, so this is a failure: %v", err)
	}
	t.Skipf("promtool not found (Debian package prometheus; bash .ci/run installs it): %v", err)
	return ""
}

// scrape parses the exposition at url.
func scrape(t *testing.T, url string, header ...string) (map[string]*dto.MetricFamily, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v\n%s", url, resp.StatusCode, err, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the scrape does not parse: %v", err)
	}
	return families, body
}

// sample returns the value of the series of family whose labels include
// want, failing the test when there is none.
func sample(t *testing.T, families map[string]*dto.MetricFamily, family string, want map[string]string) float64 {
	t.Helper()
	f, ok := families[family]
	if !ok {
		t.Errorf("no family %s in the scrape", family)
		return 0
	}
	var seen []string
series:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		seen = append(seen, fmt.Sprint(labels))
		for k, v := range want {
			if labels[k] != v {
				continue series
			}
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount())
		default:
			return m.GetUntyped().GetValue()
		}
	}
	t.Errorf("%s has no series with %v; it has %v", family, want, seen)
	return 0
}

// TestMetricsOfADaemonThatCarriedACallAndRefusals runs the daemon's real
// run path with SIPp as backend, carries one call from a gateway over mutual
// TLS, gets one peer refused with 403 and one handshake refused, then checks
// the scrape family by family and has Prometheus' promtool lint it.
func TestMetricsOfADaemonThatCarriedACallAndRefusals(t *testing.T) {
	tool := promtoolPath(t)
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newOpsPKI(t)
	sipAddr, admin := freeAddr(t, "tcp"), freeAddr(t, "tcp")
	cfg := pki.opsConfig(t, sipAddr, admin, "", uas.Addr())
	cfg = strings.Replace(cfg, "health: { probe: false }", "health: { interval: 1s, timeout: 500ms }", 1)
	d := startDaemon(t, "run", "--config", writeFile(t, "umrouter.yaml", cfg))
	base := "http://" + admin
	waitFor(t, d, base+"/readyz", func(code int, _ string) bool { return code == 200 })

	// One call: INVITE, 200, ACK, BYE, 200.
	gw := dialGateway(t, sipAddr, pki, pki.gw)
	c := gw.invite()
	ok := gw.final("INVITE")
	if ok.StatusCode != 200 {
		t.Fatalf("INVITE: %d %s\nlogs:\n%s", ok.StatusCode, ok.Reason, d.stderr.String())
	}
	c.established(ok)
	gw.inDialog(c, "ACK", 1)
	gw.inDialog(c, "BYE", 2)
	if r := gw.final("BYE"); r.StatusCode != 200 {
		t.Fatalf("BYE: %d", r.StatusCode)
	}
	if _, err := uas.WaitSuccessful(1, 15*time.Second); err != nil {
		t.Fatalf("SIPp did not count the call: %v", err)
	}

	// A peer whose certificate names no gateway: 403.
	stranger := dialGateway(t, sipAddr, pki, pki.stranger)
	stranger.invite()
	if r := stranger.final("INVITE"); r.StatusCode != 403 {
		t.Fatalf("stranger's INVITE: %d, want 403", r.StatusCode)
	}
	// A peer from another CA: the handshake is refused.
	other := testpki.NewCA(t, "another CA").Issue(t, testpki.LeafOptions{CN: gwName, DNS: []string{gwName}})
	roots := x509.NewCertPool()
	roots.AddCert(pki.ca.Cert)
	if conn, err := tls.Dial("tcp", sipAddr, &tls.Config{ServerName: "localhost", RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &other.TLS, nil }}); err == nil {
		// TLS 1.3 reports the refusal at the first read.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
		if err == nil {
			t.Fatal("a certificate from an unknown CA was accepted")
		}
	}

	// Handshake refusals and probe latencies are counted asynchronously:
	// wait for them rather than for time.
	waitFor(t, d, base+"/metrics", func(code int, body string) bool {
		return code == 200 && strings.Contains(body, `umrouter_tls_handshakes_total{reason="unknown_ca",result="refused"}`) &&
			strings.Contains(body, "umrouter_backend_probe_seconds_count")
	})
	families, raw := scrape(t, base+"/metrics")

	backend := map[string]string{"backend": uas.Addr()}
	leaf, err := tls.LoadX509KeyPair(pki.srvCert, pki.srvKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		family string
		labels map[string]string
		want   float64 // -1: any value > 0
	}{
		{"umrouter_requests_total", map[string]string{"method": "INVITE", "gateway": "gw1", "dial_plan": "main"}, 1},
		{"umrouter_requests_total", map[string]string{"method": "BYE", "gateway": "gw1", "dial_plan": "main"}, 1},
		{"umrouter_responses_total", map[string]string{"method": "INVITE", "class": "2xx"}, 1},
		{"umrouter_responses_total", map[string]string{"method": "INVITE", "class": "4xx"}, 1},
		{"umrouter_responses_total", map[string]string{"method": "BYE", "class": "2xx"}, 1},
		{"umrouter_refusals_total", map[string]string{"code": "403", "reason": "not_a_gateway"}, 1},
		{"umrouter_tls_handshakes_total", map[string]string{"result": "ok"}, -1},
		{"umrouter_tls_handshakes_total", map[string]string{"result": "refused", "reason": "unknown_ca"}, 1},
		{"umrouter_connections", map[string]string{"transport": "tls", "side": "gateway"}, 1}, // the stranger was closed after its 403
		{"umrouter_calls_active", nil, 0},
		{"umrouter_call_setup_seconds", nil, 1},
		{"umrouter_backend_up", backend, 1},
		{"umrouter_backend_admin_state", map[string]string{"backend": uas.Addr(), "state": "enabled"}, 1},
		{"umrouter_backend_admin_state", map[string]string{"backend": uas.Addr(), "state": "no-new-calls"}, 0},
		{"umrouter_backend_active_calls", backend, 0},
		{"umrouter_backend_probe_seconds", backend, -1},
		{"umrouter_backend_requests_total", map[string]string{"backend": uas.Addr(), "result": "ok"}, -1},
		{"umrouter_certificate_not_after_timestamp_seconds", map[string]string{"role": "server"}, float64(leaf.Leaf.NotAfter.Unix())},
		{"umrouter_certificate_not_after_timestamp_seconds", map[string]string{"role": "client_ca"}, float64(pki.ca.Cert.NotAfter.Unix())},
		{"umrouter_ready", nil, 1},
		{"umrouter_draining", nil, 0},
		{"umrouter_build_info", map[string]string{"version": "dev"}, 1},
		{"go_goroutines", nil, -1},
		{"process_start_time_seconds", nil, -1},
	} {
		got := sample(t, families, tc.family, tc.labels)
		if (tc.want < 0 && got <= 0) || (tc.want >= 0 && got != tc.want) {
			t.Errorf("%s%v = %v, want %v", tc.family, tc.labels, got, tc.want)
		}
	}
	// No Call-ID, number or address leaks into a label.
	for _, leak := range []string{c.callID, "5551234", "12345@"} {
		if bytes.Contains(raw, []byte(leak)) {
			t.Errorf("the scrape contains %q", leak)
		}
	}

	cmd := exec.Command(tool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(raw)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

// notifySocket is a unix datagram socket in the role of systemd's.
type notifySocket struct {
	path string
	msgs chan string
}

func listenNotify(t *testing.T, name string) *notifySocket {
	t.Helper()
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: name, msgs: make(chan string, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case n.msgs <- string(buf[:k]):
			default: // a test that stopped reading must not block the reader
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return n
}

// expect waits for a notification containing every one of lines (each a
// whole KEY=VALUE line, or KEY= as a prefix), skipping others (watchdog
// pings, status updates). It returns the matching datagram.
func (n *notifySocket) expect(t *testing.T, lines ...string) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	var seen []string
	for {
		select {
		case msg := <-n.msgs:
			if hasLines(msg, lines) {
				return msg
			}
			seen = append(seen, strings.ReplaceAll(msg, "\n", " "))
		case <-deadline:
			t.Fatalf("no notification with %q within 20s; seen: %q", lines, seen)
			return ""
		}
	}
}

func hasLines(msg string, want []string) bool {
	got := strings.Split(strings.TrimSpace(msg), "\n")
next:
	for _, w := range want {
		for _, g := range got {
			if g == w || (strings.HasSuffix(w, "=") && strings.HasPrefix(g, w)) {
				continue next
			}
		}
		return false
	}
	return true
}

// startBinary runs the built umrouter with env added to the test's
// environment; it returns the command and a channel with the exit code.
func startBinary(t *testing.T, env []string, args ...string) (*exec.Cmd, *syncBuffer, chan int) {
	t.Helper()
	stderr := &syncBuffer{}
	cmd := exec.Command(umrouterBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan int, 1)
	go func() {
		_ = cmd.Wait()
		exited <- cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		code := <-exited
		exited <- code
		if t.Failed() {
			t.Logf("umrouter logs:\n%s", stderr.String())
		}
	})
	return cmd, stderr, exited
}

func waitExit(t *testing.T, exited chan int, stderr *syncBuffer) int {
	t.Helper()
	select {
	case code := <-exited:
		exited <- code
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("still running 30s after SIGTERM:\n%s", stderr.String())
		return -1
	}
}

// TestSystemdNotifySeesReadyReloadingAndStopping runs the binary as
// systemd would under Type=notify with WatchdogSec: NOTIFY_SOCKET names a
// socket the test owns, and the test sees READY=1 once the listeners are
// up, WATCHDOG=1 pings, RELOADING=1 with MONOTONIC_USEC then READY=1 around
// a SIGHUP reload (ExecReload) and a POST /reload, and STOPPING=1 on
// SIGTERM, after which the process exits 0.
func TestSystemdNotifySeesReadyReloadingAndStopping(t *testing.T) {
	notify := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
	file, adminURL := defaultVariant(t)
	cmd, stderr, exited := startBinary(t, []string{"NOTIFY_SOCKET=" + notify.path, "WATCHDOG_USEC=200000"},
		"run", "--config", file)

	ready := notify.expect(t, "READY=1", "STATUS=")
	if !strings.Contains(ready, "STATUS=serving") {
		t.Errorf("READY=1 without a serving status: %q", ready)
	}
	// Listeners are up when READY=1 arrives: the admin server answers.
	if resp, err := http.Get(adminURL + "/healthz"); err != nil {
		t.Fatalf("READY=1 sent before the admin server answers: %v", err)
	} else {
		resp.Body.Close()
	}
	notify.expect(t, "WATCHDOG=1")

	before, err := monotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	reloading := notify.expect(t, "RELOADING=1", "MONOTONIC_USEC=")
	var usec uint64
	for _, l := range strings.Split(reloading, "\n") {
		if v, ok := strings.CutPrefix(l, "MONOTONIC_USEC="); ok {
			usec, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	after, _ := monotonicUsec()
	if usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d is not the CLOCK_MONOTONIC time of the reload (between %d and %d)", usec, before, after)
	}
	notify.expect(t, "READY=1")

	resp, err := http.Post(adminURL+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("POST /reload = %d %s", resp.StatusCode, body)
	}
	notify.expect(t, "RELOADING=1")
	notify.expect(t, "READY=1")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notify.expect(t, "STOPPING=1")
	if code := waitExit(t, exited, stderr); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0:\n%s", code, stderr.String())
	}
}

func TestNotifierReachesAbstractSocketsAndReadsTheWatchdog(t *testing.T) {
	name := fmt.Sprintf("@umrouter-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	sock := listenNotify(t, name)
	n, err := newNotifier(func(k string) string {
		return map[string]string{"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "30000000"}[k]
	})
	if err != nil || !n.enabled() {
		t.Fatalf("newNotifier: %v, enabled=%v", err, n.enabled())
	}
	if n.watchdog != 15*time.Second {
		t.Errorf("watchdog interval %v, want half of WatchdogSec=30s", n.watchdog)
	}
	if err := n.ready("serving"); err != nil {
		t.Fatal(err)
	}
	if got := sock.expect(t, "READY=1", "STATUS=serving"); got != "READY=1\nSTATUS=serving\n" {
		t.Errorf("datagram %q", got)
	}

	for _, tc := range []struct {
		env      map[string]string
		enabled  bool
		watchdog time.Duration
		err      bool
	}{
		{map[string]string{}, false, 0, false},
		{map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify"}, true, 0, false},
		{map[string]string{"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, true, 0, false},
		{map[string]string{"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": strconv.Itoa(os.Getpid())}, true, 500 * time.Millisecond, false},
		{map[string]string{"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "soon"}, true, 0, true},
		{map[string]string{"NOTIFY_SOCKET": "vsock:2:1234"}, false, 0, true},
	} {
		n, err := newNotifier(func(k string) string { return tc.env[k] })
		if (err != nil) != tc.err || n.enabled() != tc.enabled || n.watchdog != tc.watchdog {
			t.Errorf("%v: enabled=%v watchdog=%v err=%v", tc.env, n.enabled(), n.watchdog, err)
		}
	}
	// Without systemd every notification is a no-op.
	off, _ := newNotifier(func(string) string { return "" })
	if err := off.stopping("x"); err != nil {
		t.Errorf("no NOTIFY_SOCKET: %v", err)
	}
}

// TestSIGTERMLetsTheCallInProgressCompleteAndExits0 is a graceful stop of
// the real binary in the middle of a call: the backend is ringing when
// SIGTERM arrives; a new call is then refused with 503, the ringing call is
// answered, acknowledged and hung up through umrouter, and only then does
// the process exit, with code 0.
func TestSIGTERMLetsTheCallInProgressCompleteAndExits0(t *testing.T) {
	backend := startBackendUAS(t)
	pki := newOpsPKI(t)
	sipAddr, admin := freeAddr(t, "tcp"), freeAddr(t, "tcp")
	file := writeFile(t, "umrouter.yaml", pki.opsConfig(t, sipAddr, admin, "", backend.addr()))
	notify := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
	cmd, stderr, exited := startBinary(t, []string{"NOTIFY_SOCKET=" + notify.path}, "run", "--config", file)
	notify.expect(t, "READY=1")

	gw := dialGateway(t, sipAddr, pki, pki.gw)
	c := gw.invite()
	backend.next("INVITE")
	for r := gw.response(); r.StatusCode != 180; r = gw.response() {
		if r.StatusCode >= 200 {
			t.Fatalf("INVITE answered %d before the backend was told to answer", r.StatusCode)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notify.expect(t, "STOPPING=1")

	// A new call during the drain: refused, so the gateway tries another node.
	gw.invite()
	refused := gw.final("INVITE")
	if refused.StatusCode != 503 || refused.GetHeader("Retry-After") == nil {
		t.Fatalf("new INVITE while draining: %d, want 503 with Retry-After", refused.StatusCode)
	}

	// The call in progress completes.
	answerCall(t, gw, backend, c, "after SIGTERM")
	select {
	case code := <-exited:
		t.Fatalf("exited (%d) while a call was established:\n%s", code, stderr.String())
	default:
	}
	hangUp(t, gw, backend, c, "after SIGTERM")

	if code := waitExit(t, exited, stderr); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "drained: no call or transaction left") {
		t.Errorf("the stop did not wait for the call:\n%s", stderr.String())
	}
}

// ctlRun runs `umrouter ctl ARGS` in-process.
func ctlRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(t.Context(), append([]string{"ctl"}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

// TestCtlDrivesANodeOverMutualTLSAndToken starts a node whose admin API
// wants credentials (HTTPS with the node's certificate; a client
// certificate of the admin CA or the token) and drives it with umrouter ctl
// as an operator on another host would.
func TestCtlDrivesANodeOverMutualTLSAndToken(t *testing.T) {
	backend := startBackendUAS(t)
	pki := newOpsPKI(t)
	sipAddr, admin := freeAddr(t, "tcp"), freeAddr(t, "tcp")
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opsCert, opsKey := pki.ops.WriteFiles(t, t.TempDir(), "operator")
	extra := fmt.Sprintf("  client_ca_file: %s\n  token_file: %s\n", pki.caFile, tokenFile)
	cfgText := pki.opsConfig(t, sipAddr, admin, extra, backend.addr())
	file := writeFile(t, "umrouter.yaml", cfgText)
	d := startDaemon(t, "run", "--config", file)
	url := "https://" + admin
	tlsFlags := []string{"--admin", url, "--ca", pki.caFile, "--server-name", "localhost"}
	certFlags := append(append([]string{}, tlsFlags...), "--cert", opsCert, "--key", opsKey)
	tokenFlags := append(append([]string{}, tlsFlags...), "--token-file", tokenFile)

	// The health endpoints need no credentials (probes), over HTTPS.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var out, errb bytes.Buffer
		if run(t.Context(), []string{"health", "--ready", "--admin", url}, &out, &errb) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("umrouter health --ready never succeeded: %s\nlogs:\n%s", errb.String(), d.stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling interval; the loop ends on the deadline
	}

	// Without credentials: refused, and ctl says so.
	if _, errOut, code := ctlRun(t, append([]string{"status"}, tlsFlags...)...); code != 1 || !strings.Contains(errOut, "401") {
		t.Errorf("status without credentials: exit %d, %q", code, errOut)
	}
	// With a client certificate.
	out, errOut, code := ctlRun(t, append([]string{"status"}, certFlags...)...)
	thumb := tlsmgr.Thumbprint(mustLeaf(t, pki.srvCert))
	if code != 0 || !strings.Contains(out, "ops-test") || !strings.Contains(out, thumb) || !strings.Contains(out, backend.addr()) {
		t.Fatalf("status with a client certificate: exit %d\n%s%s", code, out, errOut)
	}
	// With the token, as JSON.
	out, errOut, code = ctlRun(t, append([]string{"status", "--json"}, tokenFlags...)...)
	var st statusDoc
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("status --json with the token: exit %d %s %s", code, out, errOut)
	}
	if st.Node != "ops-test" || !st.Ready || len(st.Certificates) < 2 || st.Certificates[0].Role != "server" ||
		st.Certificates[0].Thumbprint != thumb || st.Certificates[0].SelfSigned == nil || *st.Certificates[0].SelfSigned ||
		len(st.Backends) != 1 || st.Backends[0].Admin != "enabled" || len(st.Gateways) != 1 {
		t.Errorf("status document: %+v", st)
	}

	// backend ADDR STATE, flags after the arguments.
	if out, errOut, code := ctlRun(t, append([]string{"backend", backend.addr(), "no-new-calls"}, certFlags...)...); code != 0 {
		t.Fatalf("backend no-new-calls: exit %d %s%s", code, out, errOut)
	}
	if _, errOut, code := ctlRun(t, append([]string{"backend", "nowhere:5060", "disabled"}, certFlags...)...); code != 1 || !strings.Contains(errOut, "404") {
		t.Errorf("unknown backend: exit %d %q", code, errOut)
	}
	if _, errOut, code := ctlRun(t, append([]string{"backend", backend.addr(), "off"}, certFlags...)...); code != 1 || !strings.Contains(errOut, "400") {
		t.Errorf("bad state: exit %d %q", code, errOut)
	}
	out, _, _ = ctlRun(t, append([]string{"status"}, certFlags...)...)
	if !strings.Contains(out, "no-new-calls") {
		t.Errorf("status after backend no-new-calls:\n%s", out)
	}
	// The only backend takes no new call: readiness reflects it.
	var hout, herr bytes.Buffer
	if code := run(t.Context(), []string{"health", "--ready", "--admin", url}, &hout, &herr); code != 1 {
		t.Errorf("health --ready with the only backend in no-new-calls: exit %d %s", code, hout.String())
	}
	if _, _, code := ctlRun(t, append([]string{"backend", backend.addr(), "enabled"}, certFlags...)...); code != 0 {
		t.Fatal("backend enabled failed")
	}

	// reload: a broken file is refused with its line, exit 1; a good one applies.
	if err := os.WriteFile(file, []byte(strings.Replace(cfgText, "security: sip-secured", "security: sip-secure", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = ctlRun(t, append([]string{"reload"}, tokenFlags...)...)
	if code != 1 || !strings.Contains(out, "refused") || !strings.Contains(out, file+":") {
		t.Errorf("reload of a broken file: exit %d\n%s%s", code, out, errOut)
	}
	if err := os.WriteFile(file, []byte(strings.Replace(cfgText, "level: debug", "level: info", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = ctlRun(t, append([]string{"reload"}, tokenFlags...)...)
	if code != 0 || !strings.Contains(out, "applied") || !strings.Contains(out, "certificate: ok") {
		t.Errorf("reload of a good file: exit %d\n%s%s", code, out, errOut)
	}

	// --config on the node's host: address, token and the node's own
	// certificate (pinned) come from the configuration.
	out, errOut, code = ctlRun(t, "status", "--config", file)
	if code != 0 || !strings.Contains(out, "ops-test") {
		t.Errorf("status --config: exit %d\n%s%s", code, out, errOut)
	}

	// drain: readiness false, new calls 503.
	if out, errOut, code := ctlRun(t, append([]string{"drain"}, certFlags...)...); code != 0 || !strings.Contains(out, "draining") {
		t.Fatalf("drain: exit %d %s%s", code, out, errOut)
	}
	hout.Reset()
	herr.Reset()
	if code := run(t.Context(), []string{"health", "--ready", "--admin", url}, &hout, &herr); code != 1 || !strings.Contains(herr.String(), "draining") {
		t.Errorf("health --ready after drain: exit %d %q", code, herr.String())
	}
	if code := run(t.Context(), []string{"health", "--admin", url}, &hout, &herr); code != 0 {
		t.Errorf("health (liveness) after drain: exit %d", code)
	}
	gw := dialGateway(t, sipAddr, pki, pki.gw)
	gw.invite()
	if r := gw.final("INVITE"); r.StatusCode != 503 {
		t.Errorf("INVITE to a drained node: %d, want 503", r.StatusCode)
	}

	// undrain: the end of maintenance, without a restart: ready again, and
	// a new call reaches the backend and completes.
	if out, errOut, code := ctlRun(t, append([]string{"undrain"}, tokenFlags...)...); code != 0 || !strings.Contains(out, "taking new calls") {
		t.Fatalf("undrain: exit %d %s%s", code, out, errOut)
	}
	hout.Reset()
	herr.Reset()
	if code := run(t.Context(), []string{"health", "--ready", "--admin", url}, &hout, &herr); code != 0 {
		t.Errorf("health --ready after undrain: exit %d %q", code, herr.String())
	}
	c := gw.invite()
	backend.next("INVITE")
	answerCall(t, gw, backend, c, "after undrain")
	hangUp(t, gw, backend, c, "after undrain")
	if code := d.stop(t); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

func mustLeaf(t *testing.T, certFile string) *x509.Certificate {
	t.Helper()
	doc := &document{}
	doc.TLS.CertFile = certFile
	certs, err := nodeCertificate(doc)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func TestCtlAndHealthUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"ctl"},
		{"ctl", "restart"},
		{"ctl", "status", "extra"},
		{"ctl", "backend", "um1:5061"},
		{"ctl", "status", "--admin", "ftp://x"},
		{"ctl", "status", "--admin", "http://127.0.0.1:1", "--config", "x.yaml"},
		{"ctl", "status", "--cert", "c.pem"},
		{"ctl", "status", "--bogus"},
		{"health", "extra"},
		{"health", "--admin", "nope"},
	} {
		var out, errb bytes.Buffer
		if code := run(t.Context(), args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
	// A node that is not there: exit 1 with the reason.
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"health", "--admin", "http://" + freeAddr(t, "tcp")}, &out, &errb); code != 1 || errb.Len() == 0 {
		t.Errorf("health of nothing: exit %d %q", code, errb.String())
	}
	// The token never goes in clear beyond loopback.
	tok := filepath.Join(t.TempDir(), "tok")
	_ = os.WriteFile(tok, []byte("t\n"), 0o600)
	if code := run(t.Context(), []string{"ctl", "status", "--admin", "http://192.0.2.1:9090", "--token-file", tok}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "in clear") {
		t.Errorf("token over http to a remote host: exit %d %q", code, errb.String())
	}
}

func TestAdminBeyondLoopbackWithoutCredentialsIsRefused(t *testing.T) {
	pki := newOpsPKI(t)
	cfg := pki.opsConfig(t, "127.0.0.1:0", "0.0.0.0:9090", "", "127.0.0.1:5070")
	file := writeFile(t, "umrouter.yaml", cfg)
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"config", "check", file}, &out, &errb); code != 1 ||
		!strings.Contains(out.String(), "admin.listen: 0.0.0.0:9090 is not a loopback address") {
		t.Errorf("config check: exit %d\n%s", code, out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"run", "--config", file}, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "admin.token_file") {
		t.Errorf("run: exit %d\n%s", code, errb.String())
	}
}
