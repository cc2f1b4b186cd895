package metrics

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/testpki"
)

// fakeControl records what the admin API asked of the daemon.
type fakeControl struct {
	mu       sync.Mutex
	drained  bool
	reloads  int
	refuse   bool // Reload reports a refused configuration
	stopping bool // Reload cannot be attempted
	states   map[string]string
}

func newFakeControl() *fakeControl {
	return &fakeControl{states: map[string]string{"um1.example.test:5061": "enabled"}}
}

func (f *fakeControl) Status() any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return map[string]any{"node": "test-node", "draining": f.drained, "backends": f.states}
}

func (f *fakeControl) Reload(context.Context) (any, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopping {
		return nil, false, errors.New("the daemon is stopping")
	}
	f.reloads++
	if f.refuse {
		return map[string]string{"config": "error"}, false, nil
	}
	return map[string]string{"config": "ok"}, true, nil
}

func (f *fakeControl) Drain() any {
	f.mu.Lock()
	f.drained = true
	f.mu.Unlock()
	return f.Status()
}

func (f *fakeControl) Undrain() (any, error) {
	f.mu.Lock()
	if f.stopping {
		f.mu.Unlock()
		return nil, errors.New("the daemon is stopping")
	}
	f.drained = false
	f.mu.Unlock()
	return f.Status(), nil
}

func (f *fakeControl) SetBackendState(addr, state string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.states[addr]; !ok {
		return fmt.Errorf("%w %q", ErrUnknownBackend, addr)
	}
	switch state {
	case "enabled", "disabled", "no-new-calls":
	default:
		return fmt.Errorf("%w %q", ErrInvalidState, state)
	}
	f.states[addr] = state
	return nil
}

// adminUnderTest is a served admin server and a client that reaches it.
type adminUnderTest struct {
	a      *AdminServer
	m      *Metrics
	base   string
	client *http.Client
	done   <-chan error
}

// startAdmin binds an admin server of cfg (Listen defaults to a loopback
// port chosen by the kernel) and serves it until ctx ends.
func startAdmin(t *testing.T, ctx context.Context, cfg Config, opts AdminOptions) *adminUnderTest {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	m := New()
	a, err := NewAdminServer(cfg, m, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		done <- a.Serve(ctx)
		close(stopped)
	}()
	t.Cleanup(func() {
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			t.Error("admin server still serving 10s after the test")
		}
	})
	return &adminUnderTest{a: a, m: m, base: a.URL(), client: &http.Client{Timeout: 10 * time.Second}, done: done}
}

func (u *adminUnderTest) do(t *testing.T, method, path string, body io.Reader, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := u.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestAdminServerAnswersHealthReadinessAndMetrics(t *testing.T) {
	var notReady atomic.Pointer[error]
	ready := func() error {
		if p := notReady.Load(); p != nil {
			return *p
		}
		return nil
	}
	u := startAdmin(t, t.Context(), Config{}, AdminOptions{Ready: ready})

	if code, body := u.do(t, "GET", "/healthz", nil); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 \"ok\\n\"", code, body)
	}
	if code, body := u.do(t, "GET", "/readyz", nil); code != 200 || body != "ok\n" {
		t.Errorf("/readyz while ready = %d %q, want 200 \"ok\\n\"", code, body)
	}
	reason := errors.New("no healthy backend")
	notReady.Store(&reason)
	if code, body := u.do(t, "GET", "/readyz", nil); code != 503 || !strings.Contains(body, "no healthy backend") {
		t.Errorf("/readyz while not ready = %d %q, want 503 with the reason", code, body)
	}
	code, body := u.do(t, "GET", "/metrics", nil)
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, family := range []string{"umrouter_calls_active", "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(body, family) {
			t.Errorf("/metrics lacks %s", family)
		}
	}
	if code, _ := u.do(t, "GET", "/nothing", nil); code != 404 {
		t.Errorf("/nothing = %d, want 404", code)
	}
	// Without a Control, the control endpoints do not exist.
	if code, _ := u.do(t, "GET", "/status", nil); code != 404 {
		t.Errorf("/status without a Control = %d, want 404", code)
	}
}

func TestAdminServerRefusesWritesOnReadEndpoints(t *testing.T) {
	u := startAdmin(t, t.Context(), Config{}, AdminOptions{Control: newFakeControl()})
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/status"} {
		if code, _ := u.do(t, "POST", path, nil); code != http.StatusMethodNotAllowed {
			t.Errorf("POST %s = %d, want 405", path, code)
		}
	}
	for _, path := range []string{"/reload", "/drain", "/undrain", "/backends/um1.example.test:5061/state"} {
		if code, _ := u.do(t, "GET", path, nil); code != http.StatusMethodNotAllowed {
			t.Errorf("GET %s = %d, want 405", path, code)
		}
	}
}

func TestAdminControlEndpoints(t *testing.T) {
	ctl := newFakeControl()
	u := startAdmin(t, t.Context(), Config{}, AdminOptions{Control: ctl})

	code, body := u.do(t, "GET", "/status", nil)
	var st map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st["node"] != "test-node" {
		t.Fatalf("/status = %d %s", code, body)
	}

	if code, body := u.do(t, "POST", "/reload", nil); code != 200 || !strings.Contains(body, `"ok"`) {
		t.Errorf("POST /reload = %d %s, want 200 with the result", code, body)
	}
	ctl.refuse = true
	if code, body := u.do(t, "POST", "/reload", nil); code != http.StatusUnprocessableEntity || !strings.Contains(body, `"error"`) {
		t.Errorf("POST /reload refused = %d %s, want 422 with the result", code, body)
	}
	ctl.stopping = true
	if code, _ := u.do(t, "POST", "/reload", nil); code != http.StatusServiceUnavailable {
		t.Errorf("POST /reload while stopping = %d, want 503", code)
	}
	if ctl.reloads != 2 {
		t.Errorf("Control.Reload called %d times, want 2", ctl.reloads)
	}

	if code, body := u.do(t, "POST", "/drain", nil); code != 200 || !strings.Contains(body, `"draining": true`) {
		t.Errorf("POST /drain = %d %s", code, body)
	}
	ctl.stopping = false
	if code, body := u.do(t, "POST", "/undrain", nil); code != 200 || !strings.Contains(body, `"draining": false`) {
		t.Errorf("POST /undrain = %d %s", code, body)
	}
	ctl.stopping = true
	if code, _ := u.do(t, "POST", "/undrain", nil); code != http.StatusServiceUnavailable {
		t.Errorf("POST /undrain while stopping = %d, want 503", code)
	}

	const backend = "/backends/um1.example.test:5061/state"
	for _, tc := range []struct {
		name   string
		path   string
		body   string
		ctype  string
		code   int
		wanted string // the backend's state afterwards
	}{
		{"query", backend + "?state=no-new-calls", "", "", 200, "no-new-calls"},
		{"form body", backend, "state=disabled", "application/x-www-form-urlencoded", 200, "disabled"},
		{"json body", backend, `{"state":"enabled"}`, "application/json", 200, "enabled"},
		{"bad state", backend + "?state=off", "", "", 400, "enabled"},
		{"no state", backend, "", "", 400, "enabled"},
		{"unknown backend", "/backends/" + url.PathEscape("[::1]:5060") + "/state?state=disabled", "", "", 404, "enabled"},
	} {
		var hdr []string
		if tc.ctype != "" {
			hdr = []string{"Content-Type", tc.ctype}
		}
		code, body := u.do(t, "POST", tc.path, strings.NewReader(tc.body), hdr...)
		if code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.code)
		}
		if code >= 400 && !strings.Contains(body, `"error"`) {
			t.Errorf("%s: error answer %s does not say why", tc.name, body)
		}
		if got := ctl.states["um1.example.test:5061"]; got != tc.wanted {
			t.Errorf("%s: backend state %q, want %q", tc.name, got, tc.wanted)
		}
	}
}

func TestAdminRefusesCrossSiteBrowserWritesAndReboundHosts(t *testing.T) {
	ctl := newFakeControl()
	u := startAdmin(t, t.Context(), Config{}, AdminOptions{Control: ctl})
	// A form on a web page POSTing to the loopback admin server.
	if code, _ := u.do(t, "POST", "/drain", nil, "Sec-Fetch-Site", "cross-site"); code != http.StatusForbidden {
		t.Errorf("cross-site POST /drain = %d, want 403", code)
	}
	if code, _ := u.do(t, "POST", "/drain", nil, "Origin", "https://evil.example"); code != http.StatusForbidden {
		t.Errorf("POST /drain with a foreign Origin = %d, want 403", code)
	}
	if ctl.drained {
		t.Fatal("a cross-site request drained the node")
	}
	// DNS rebinding: the attacker's name, resolved to 127.0.0.1.
	req, _ := http.NewRequest("GET", u.base+"/status", nil)
	req.Host = "evil.example:9090"
	resp, err := u.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("GET /status with Host evil.example = %d, want 421", resp.StatusCode)
	}
	for _, host := range []string{"localhost:9090", "127.0.0.1", "[::1]:9090"} {
		req, _ := http.NewRequest("GET", u.base+"/healthz", nil)
		req.Host = host
		resp, err := u.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("Host %s: %d, want 200", host, resp.StatusCode)
		}
	}
}

func TestAdminConfigRequiresCredentialsBeyondLoopback(t *testing.T) {
	for _, tc := range []struct {
		cfg      Config
		valid    bool
		loopback bool
		tls      bool
	}{
		{Config{}, true, false, false},
		{Config{Listen: "127.0.0.1:9090"}, true, true, false},
		{Config{Listen: "[::1]:9090"}, true, true, false},
		{Config{Listen: "localhost:9090"}, true, true, false},
		{Config{Listen: "127.0.0.1:9090", TokenFile: "/t"}, true, true, false},
		{Config{Listen: "127.0.0.1:9090", ClientCAFile: "/ca"}, true, true, true},
		{Config{Listen: "0.0.0.0:9090"}, false, false, true},
		{Config{Listen: ":9090"}, false, false, true},
		{Config{Listen: "[::]:9090"}, false, false, true},
		{Config{Listen: "10.0.0.5:9090"}, false, false, true},
		{Config{Listen: "umrouter.example.com:9090"}, false, false, true},
		{Config{Listen: "0.0.0.0:9090", TokenFile: "/t"}, true, false, true},
		{Config{Listen: "0.0.0.0:9090", ClientCAFile: "/ca"}, true, false, true},
		{Config{Listen: "9090"}, false, false, true},
	} {
		errs := tc.cfg.Validate()
		if (len(errs) == 0) != tc.valid {
			t.Errorf("%+v: Validate = %v, want valid=%v", tc.cfg, errs, tc.valid)
		}
		if len(errs) > 0 && tc.cfg.Listen != "9090" && !strings.Contains(errs[0].Msg, "client_ca_file") {
			t.Errorf("%+v: %q does not say how to fix it", tc.cfg, errs[0].Msg)
		}
		if tc.cfg.Listen != "" && tc.cfg.Loopback() != tc.loopback {
			t.Errorf("%+v: Loopback = %v", tc.cfg, !tc.loopback)
		}
		if tc.cfg.TLS() != tc.tls {
			t.Errorf("%+v: TLS = %v", tc.cfg, !tc.tls)
		}
	}
	if _, err := NewAdminServer(Config{Listen: "0.0.0.0:0"}, New(), AdminOptions{}, nil); err == nil ||
		!strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("NewAdminServer on 0.0.0.0 without credentials: %v", err)
	}
}

func TestAdminRefusesMissingOrEmptyCredentialFiles(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	notPEM := filepath.Join(dir, "ca.pem")
	spaced := filepath.Join(dir, "spaced")
	for f, content := range map[string]string{empty: " \n", notPEM: "hello", spaced: "two words\n"} {
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, errors.New("unused") }
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Listen: "127.0.0.1:0", TokenFile: filepath.Join(dir, "missing")}, "admin.token_file"},
		{Config{Listen: "127.0.0.1:0", TokenFile: empty}, "empty"},
		{Config{Listen: "127.0.0.1:0", TokenFile: spaced}, "one word"},
		{Config{Listen: "127.0.0.1:0", ClientCAFile: notPEM}, "no PEM certificate"},
	} {
		_, err := NewAdminServer(tc.cfg, New(), AdminOptions{Certificate: cert}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error saying %q", tc.cfg, err, tc.want)
		}
	}
}

// adminPKI is a CA for admin clients, a client it issued, a stranger's
// client certificate, and the server certificate.
type adminPKI struct {
	ca, other       *testpki.CA
	caFile          string
	client, foreign *testpki.Leaf
	server          *testpki.Leaf
}

func newAdminPKI(t *testing.T) *adminPKI {
	t.Helper()
	p := &adminPKI{ca: testpki.NewCA(t, "admin CA"), other: testpki.NewCA(t, "someone else")}
	p.caFile = p.ca.WriteCAFile(t, t.TempDir())
	p.client = p.ca.Issue(t, testpki.LeafOptions{CN: "operator", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	p.foreign = p.other.Issue(t, testpki.LeafOptions{CN: "intruder", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	p.server = p.ca.Issue(t, testpki.LeafOptions{CN: "umrouter", IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	return p
}

func (p *adminPKI) clientWith(leaf *testpki.Leaf) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	cfg := &tls.Config{RootCAs: roots}
	if leaf != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &leaf.TLS, nil }
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

func writeToken(t *testing.T, tok string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestAdminAuthenticationRules(t *testing.T) {
	pki := newAdminPKI(t)
	token := "s3cret-token"
	tokenFile := writeToken(t, token)
	serverCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pki.server.TLS, nil }

	type attempt struct {
		name   string
		client *http.Client
		header []string
		code   int // for the protected endpoints; /healthz is always 200
	}
	for _, tc := range []struct {
		name     string
		cfg      Config
		attempts func(u *adminUnderTest) []attempt
	}{
		{"token only, loopback, plain HTTP", Config{TokenFile: tokenFile}, func(u *adminUnderTest) []attempt {
			return []attempt{
				{"no credentials", u.client, nil, 401},
				{"wrong token", u.client, []string{"Authorization", "Bearer nope"}, 401},
				{"basic auth", u.client, []string{"Authorization", "Basic " + token}, 401},
				{"right token", u.client, []string{"Authorization", "Bearer " + token}, 200},
				{"right token, lower-case scheme", u.client, []string{"Authorization", "bearer " + token}, 200},
			}
		}},
		{"client certificates, HTTPS", Config{ClientCAFile: pki.caFile}, func(u *adminUnderTest) []attempt {
			return []attempt{
				{"no certificate", pki.clientWith(nil), nil, 401},
				{"certificate of the admin CA", pki.clientWith(pki.client), nil, 200},
				{"a token is not enough", pki.clientWith(nil), []string{"Authorization", "Bearer " + token}, 401},
			}
		}},
		{"either, HTTPS", Config{ClientCAFile: pki.caFile, TokenFile: tokenFile}, func(u *adminUnderTest) []attempt {
			return []attempt{
				{"no credentials", pki.clientWith(nil), nil, 401},
				{"certificate", pki.clientWith(pki.client), nil, 200},
				{"token", pki.clientWith(nil), []string{"Authorization", "Bearer " + token}, 200},
				{"wrong token", pki.clientWith(nil), []string{"Authorization", "Bearer x"}, 401},
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctl := newFakeControl()
			u := startAdmin(t, t.Context(), tc.cfg, AdminOptions{Control: ctl, Certificate: serverCert})
			wantScheme := "http://"
			if tc.cfg.ClientCAFile != "" {
				wantScheme = "https://"
			}
			if !strings.HasPrefix(u.base, wantScheme) {
				t.Fatalf("served at %s, want %s", u.base, wantScheme)
			}
			for _, at := range tc.attempts(u) {
				c := &adminUnderTest{base: u.base, client: at.client}
				for _, ep := range []struct{ method, path string }{
					{"GET", "/metrics"}, {"GET", "/status"}, {"POST", "/reload"}, {"POST", "/drain"}, {"POST", "/undrain"},
					{"POST", "/backends/um1.example.test:5061/state?state=enabled"},
				} {
					code, body := c.do(t, ep.method, ep.path, nil, at.header...)
					if code != at.code {
						t.Errorf("%s: %s %s = %d %.200s, want %d", at.name, ep.method, ep.path, code, body, at.code)
					}
					if code == 401 && !strings.Contains(body, "credentials required") {
						t.Errorf("%s: 401 body %q does not say what is required", at.name, body)
					}
				}
				for _, path := range []string{"/healthz", "/readyz"} {
					if code, _ := c.do(t, "GET", path, nil); code != 200 {
						t.Errorf("%s: GET %s = %d, want 200 without credentials", at.name, path, code)
					}
				}
			}
			if n := testCounter(u.m.AdminAuthFailures); n == 0 {
				t.Error("refused requests are not counted in umrouter_admin_auth_failures_total")
			}
		})
	}

	t.Run("a certificate from another CA fails the handshake", func(t *testing.T) {
		u := startAdmin(t, t.Context(), Config{ClientCAFile: pki.caFile}, AdminOptions{Control: newFakeControl(), Certificate: serverCert})
		_, err := pki.clientWith(pki.foreign).Get(u.base + "/status")
		if err == nil {
			t.Fatal("a client certificate from a foreign CA was accepted")
		}
	})
}

func TestAdminReloadRotatesTheToken(t *testing.T) {
	tokenFile := writeToken(t, "old")
	u := startAdmin(t, t.Context(), Config{TokenFile: tokenFile}, AdminOptions{Control: newFakeControl()})
	if code, _ := u.do(t, "GET", "/status", nil, "Authorization", "Bearer old"); code != 200 {
		t.Fatalf("old token refused before rotation: %d", code)
	}
	if err := os.WriteFile(tokenFile, []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := u.a.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, _ := u.do(t, "GET", "/status", nil, "Authorization", "Bearer old"); code != 401 {
		t.Errorf("old token after rotation: %d, want 401", code)
	}
	if code, _ := u.do(t, "GET", "/status", nil, "Authorization", "Bearer new"); code != 200 {
		t.Errorf("new token after rotation: %d, want 200", code)
	}
	// A broken file keeps the token in force.
	if err := os.WriteFile(tokenFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := u.a.Reload(); err == nil {
		t.Error("Reload accepted an empty token file")
	}
	if code, _ := u.do(t, "GET", "/status", nil, "Authorization", "Bearer new"); code != 200 {
		t.Errorf("token after a refused reload: %d, want 200", code)
	}
}

func TestAdminPprofOnlyWhenEnabled(t *testing.T) {
	off := startAdmin(t, t.Context(), Config{}, AdminOptions{})
	if code, _ := off.do(t, "GET", "/debug/pprof/", nil); code != 404 {
		t.Errorf("/debug/pprof/ without admin.pprof = %d, want 404", code)
	}
	on := startAdmin(t, t.Context(), Config{Pprof: true, TokenFile: writeToken(t, "tok")}, AdminOptions{})
	if code, _ := on.do(t, "GET", "/debug/pprof/", nil); code != 401 {
		t.Errorf("/debug/pprof/ without the token = %d, want 401", code)
	}
	if code, body := on.do(t, "GET", "/debug/pprof/", nil, "Authorization", "Bearer tok"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ = %d %.100s", code, body)
	}
}

func TestAdminServerStopsListeningWhenContextIsCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	u := startAdmin(t, ctx, Config{}, AdminOptions{})
	if code, _ := u.do(t, "GET", "/healthz", nil); code != 200 {
		t.Fatalf("/healthz = %d before shutdown", code)
	}
	cancel()
	select {
	case err := <-u.done:
		if err != nil {
			t.Fatalf("Serve returned %v after cancellation, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of cancellation")
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(u.base, "http://"))
	if err == nil {
		conn.Close()
		t.Fatal("admin port still accepts connections after Serve returned")
	}
}

func TestAdminServerReportsAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := NewAdminServer(Config{Listen: ln.Addr().String()}, New(), AdminOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err == nil {
		t.Fatal("Listen on a taken address succeeded")
	}
}

func TestAdminServerDisabledServesNothingUntilCancelled(t *testing.T) {
	a, err := NewAdminServer(Config{}, New(), AdminOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	if a.Addr() != nil || a.URL() != "" {
		t.Fatalf("disabled admin server bound %v", a.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Serve(ctx); err != nil {
		t.Fatal(err)
	}
}
