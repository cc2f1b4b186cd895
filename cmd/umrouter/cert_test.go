package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/umrouter/umrouter/internal/testpki"
	"github.com/umrouter/umrouter/tlsmgr"
)

// certRun runs `umrouter cert ARGS` in process.
func certRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runCert(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// certOK runs a cert command that must succeed and returns its output.
func certOK(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := certRun(t, args...)
	if code != 0 {
		t.Fatalf("umrouter cert %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

var thumbprintLine = regexp.MustCompile(`(?m)^thumbprint ([0-9a-f]{64})$`)

// thumbprintOf returns the thumbprint a command printed.
func thumbprintOf(t *testing.T, out string) string {
	t.Helper()
	m := thumbprintLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no thumbprint line in:\n%s", out)
	}
	return m[1]
}

// openssl runs the real openssl command in dir.
func openssl(t *testing.T, dir string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed (Debian package openssl)")
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// opensslFingerprint is openssl's SHA-256 fingerprint of a certificate
// file, in the store's spelling.
func opensslFingerprint(t *testing.T, dir, file string, der bool) string {
	t.Helper()
	args := []string{"x509", "-in", file, "-noout", "-fingerprint", "-sha256"}
	if der {
		args = append(args, "-inform", "DER")
	}
	out := openssl(t, dir, args...)
	_, fp, ok := strings.Cut(strings.TrimSpace(out), "=")
	if !ok {
		t.Fatalf("openssl fingerprint output %q", out)
	}
	return strings.ToLower(strings.ReplaceAll(fp, ":", ""))
}

type certListing struct {
	StateDir        string            `json:"state_dir"`
	Certificates    []tlsmgr.CertInfo `json:"certificates"`
	PendingRequests []tlsmgr.Request  `json:"pending_requests"`
}

func certList(t *testing.T, store string) certListing {
	t.Helper()
	var l certListing
	if err := json.Unmarshal([]byte(certOK(t, "list", "--json", "--state-dir", store)), &l); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestCertNewListEnableExportRemove(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "state")
	out := certOK(t, "new", "--self-signed", "--dns", "um.example.com", "--dns", "um1.example.com,localhost",
		"--ip", "127.0.0.1", "--key", "rsa-2048", "--days", "30", "--state-dir", store)
	thumb := thumbprintOf(t, out)
	if !strings.Contains(out, "umrouter cert enable "+thumb) {
		t.Errorf("new does not say how to enable the certificate:\n%s", out)
	}

	l := certList(t, store)
	if len(l.Certificates) != 1 {
		t.Fatalf("list: %+v", l)
	}
	c := l.Certificates[0]
	if c.Thumbprint != thumb || c.Subject != "CN=um.example.com" || c.Issuer != "CN=um.example.com" ||
		strings.Join(c.SANs(), " ") != "DNS:um.example.com DNS:um1.example.com DNS:localhost IP:127.0.0.1" ||
		!c.SelfSigned || c.Active || c.KeyType != "rsa-2048" || c.NotAfter.Sub(c.NotBefore) < 30*24*time.Hour {
		t.Errorf("list entry = %+v", c)
	}
	text := certOK(t, "list", "--state-dir", store)
	for _, want := range []string{"thumbprint " + thumb, "DNS:um1.example.com", "self-signed  yes", "key type     rsa-2048", "active       no"} {
		if !strings.Contains(text, want) {
			t.Errorf("text list lacks %q:\n%s", want, text)
		}
	}

	certOK(t, "enable", strings.ToUpper(thumb), "--state-dir", store)
	if l := certList(t, store); !l.Certificates[0].Active {
		t.Error("enable did not make the certificate active")
	}

	// Export: openssl reads both forms and computes the same thumbprint.
	certOK(t, "export", thumb, "--out", filepath.Join(dir, "um.pem"), "--state-dir", store)
	certOK(t, "export", thumb, "--der", "--out", filepath.Join(dir, "um.cer"), "--state-dir", store)
	if fp := opensslFingerprint(t, dir, "um.pem", false); fp != thumb {
		t.Errorf("openssl fingerprint of the PEM export %s, want %s", fp, thumb)
	}
	if fp := opensslFingerprint(t, dir, "um.cer", true); fp != thumb {
		t.Errorf("openssl fingerprint of the DER export %s, want %s", fp, thumb)
	}
	if pemOut, _ := os.ReadFile(filepath.Join(dir, "um.pem")); bytes.Contains(pemOut, []byte("PRIVATE KEY")) {
		t.Fatal("export wrote the private key")
	}

	_, errOut, code := certRun(t, "remove", thumb, "--state-dir", store)
	if code != 1 || !strings.Contains(errOut, "active") {
		t.Errorf("remove of the active certificate: exit %d, stderr %q; want 1 and a refusal", code, errOut)
	}
	other := thumbprintOf(t, certOK(t, "new", "--self-signed", "--dns", "spare.example.com", "--state-dir", store))
	certOK(t, "remove", other, "--state-dir", store)
	if l := certList(t, store); len(l.Certificates) != 1 || l.Certificates[0].Thumbprint != thumb {
		t.Errorf("after remove: %+v", l.Certificates)
	}
}

// opensslCA makes a root CA with openssl in dir: ca.crt and ca.key.
func opensslCA(t *testing.T, dir string) {
	t.Helper()
	openssl(t, dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=Test Issuing CA/O=umrouter test", "-days", "2",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
}

func TestCertRequestSignedByOpenSSLCompletesIt(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "state")
	out := certOK(t, "request", "--dns", "um.example.com", "--dns", "um1.example.com", "--ip", "192.0.2.10",
		"--subject", "CN=um.example.com, O=Contoso, OU=Voice, C=US", "--key", "rsa-3072",
		"--out", filepath.Join(dir, "um.csr"), "--state-dir", store)
	if !strings.Contains(out, "pending request") || !strings.Contains(out, "umrouter cert import") {
		t.Errorf("request output:\n%s", out)
	}

	// openssl accepts the request's self-signature and reads its names.
	openssl(t, dir, "req", "-verify", "-noout", "-in", "um.csr")
	text := openssl(t, dir, "req", "-noout", "-text", "-in", "um.csr")
	for _, want := range []string{"DNS:um.example.com", "DNS:um1.example.com", "IP Address:192.0.2.10", "O = Contoso", "3072 bit"} {
		if !strings.Contains(text, want) {
			t.Errorf("openssl sees no %q in the CSR:\n%s", want, text)
		}
	}
	l := certList(t, store)
	if len(l.Certificates) != 0 || len(l.PendingRequests) != 1 {
		t.Fatalf("before import: %+v", l)
	}

	// A CA signs it with openssl, copying the requested names.
	opensslCA(t, dir)
	openssl(t, dir, "x509", "-req", "-in", "um.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
		"-days", "1", "-copy_extensions", "copyall", "-out", "um.crt")
	out = certOK(t, "import", filepath.Join(dir, "um.crt"), "--state-dir", store)
	thumb := thumbprintOf(t, out)
	if !strings.Contains(out, "completes pending request "+l.PendingRequests[0].ID) {
		t.Errorf("import does not report the completed request:\n%s", out)
	}
	if fp := opensslFingerprint(t, dir, "um.crt", false); fp != thumb {
		t.Errorf("thumbprint %s, openssl says %s", thumb, fp)
	}
	l = certList(t, store)
	if len(l.PendingRequests) != 0 || len(l.Certificates) != 1 {
		t.Fatalf("after import: %+v", l)
	}
	c := l.Certificates[0]
	if c.Issuer != "CN=Test Issuing CA,O=umrouter test" || c.SelfSigned || c.KeyType != "rsa-3072" ||
		strings.Join(c.SANs(), " ") != "DNS:um.example.com DNS:um1.example.com IP:192.0.2.10" || c.Problem != "" {
		t.Errorf("imported certificate = %+v", c)
	}
	certOK(t, "enable", thumb, "--state-dir", store)
}

func TestCertImportPKCS12MadeByOpenSSL(t *testing.T) {
	ca := testpki.NewCA(t, "Corp CA")
	leaf := ca.Issue(t, testpki.LeafOptions{CN: "um.example.com", DNS: []string{"um.example.com"}})
	tests := []struct {
		name string
		args []string // extra openssl pkcs12 -export options
	}{
		// OpenSSL 3's default: PBES2 with AES-256-CBC, SHA-256 MAC.
		{"openssl default (AES-256)", nil},
		// What Windows Server exported for years (and still reads): 3DES, SHA-1 MAC.
		{"3DES as older Windows exports", []string{"-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			store := filepath.Join(dir, "state")
			leaf.WriteFiles(t, dir, "um")
			if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("correct horse\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"pkcs12", "-export", "-inkey", "um.key", "-in", "um.crt", "-certfile", "ca.crt",
				"-name", "umrouter", "-passout", "file:pw", "-out", "um.pfx"}, tt.args...)
			openssl(t, dir, args...)
			pfx := filepath.Join(dir, "um.pfx")

			t.Setenv(certPasswordEnv, "wrong")
			_, errOut, code := certRun(t, "import", pfx, "--state-dir", store)
			if code != 1 || !strings.Contains(errOut, "wrong password") || !strings.Contains(errOut, "--password-file") {
				t.Errorf("wrong password from the environment: exit %d, stderr %q", code, errOut)
			}
			out := certOK(t, "import", pfx, "--password-file", filepath.Join(dir, "pw"), "--state-dir", store)
			if got := thumbprintOf(t, out); got != tlsmgr.Thumbprint(leaf.Cert) {
				t.Errorf("imported %s, want %s", got, tlsmgr.Thumbprint(leaf.Cert))
			}
			if !strings.Contains(out, "1 CA certificate(s)") {
				t.Errorf("chain not imported:\n%s", out)
			}
			t.Setenv(certPasswordEnv, "correct horse")
			certOK(t, "import", pfx, "--state-dir", store) // idempotent, password from the environment
		})
	}
}

func TestCertImportRefusesBadMaterial(t *testing.T) {
	ca := testpki.NewCA(t, "Corp CA")
	now := time.Now()
	expired := ca.Issue(t, testpki.LeafOptions{NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	a, b := ca.Issue(t, testpki.LeafOptions{}), ca.Issue(t, testpki.LeafOptions{})
	tests := []struct {
		name, content, want string
	}{
		{"expired", string(expired.CertPEM) + string(expired.KeyPEM), "expired"},
		{"key does not match", string(a.CertPEM) + string(b.KeyPEM), "matches none"},
		{"corrupt", "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "certificate #1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "in.pem")
			if err := os.WriteFile(file, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, errOut, code := certRun(t, "import", file, "--state-dir", filepath.Join(dir, "state"))
			if code != 1 || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, file) {
				t.Errorf("exit %d, stderr %q; want 1 naming %s and %q", code, errOut, file, tt.want)
			}
		})
	}
}

func TestCertFindsTheStoreThroughTheConfiguration(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "state")
	conf := filepath.Join(dir, "umrouter.yaml")
	if err := os.WriteFile(conf, []byte("node_name: a\ntls:\n  state_dir: "+store+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	thumb := thumbprintOf(t, certOK(t, "new", "--self-signed", "--dns", "a.example.com", "--config", conf))
	if l := certList(t, store); len(l.Certificates) != 1 || l.Certificates[0].Thumbprint != thumb {
		t.Errorf("--config did not find the store %s: %+v", store, l)
	}

	explicit := filepath.Join(dir, "explicit.yaml")
	if err := os.WriteFile(explicit, []byte("tls:\n  cert_file: /etc/tls/tls.crt\n  key_file: /etc/tls/tls.key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := certRun(t, "list", "--config", explicit)
	if code != 1 || !strings.Contains(errOut, "cert_file") {
		t.Errorf("explicit-file configuration: exit %d, stderr %q; want 1 explaining cert_file", code, errOut)
	}
}

func TestCertWithoutStoreFlagsUsesTheDaemonsDefaultStore(t *testing.T) {
	// The store `umrouter run` uses without tls.state_dir, here through
	// systemd's $STATE_DIRECTORY; stderr names it, since an administrator
	// in another environment would get another default.
	dir := t.TempDir()
	t.Setenv("STATE_DIRECTORY", dir)
	out, errOut, code := certRun(t, "new", "--self-signed", "--dns", "a.example.com")
	if code != 0 || !strings.Contains(errOut, "default certificate store "+dir) {
		t.Fatalf("exit %d, stderr %q; want 0 naming %s", code, errOut, dir)
	}
	thumb := thumbprintOf(t, out)
	if !strings.Contains(out, "to use it: umrouter cert enable "+thumb+"\n") {
		t.Errorf("hint should need no store flag:\n%s", out)
	}
	conf := filepath.Join(t.TempDir(), "umrouter.yaml")
	if err := os.WriteFile(conf, []byte("tls:\n  min_version: \"1.3\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := certOK(t, "list", "--config", conf); !strings.Contains(out, thumb) {
		t.Errorf("configuration without state_dir did not list the default store:\n%s", out)
	}
}

func TestCertUsageErrorsExitTwo(t *testing.T) {
	store := filepath.Join(t.TempDir(), "state")
	if _, err := tlsmgr.OpenStore(store); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, 2, "usage: umrouter cert"},
		{"unknown command", []string{"renew"}, 2, `unknown command "renew"`},
		{"help", []string{"--help"}, 0, ""},
		{"new without --self-signed", []string{"new", "--dns", "a.example", "--state-dir", store}, 2, "--self-signed"},
		{"new without names", []string{"new", "--self-signed", "--state-dir", store}, 2, "--dns"},
		{"bad IP", []string{"new", "--self-signed", "--ip", "300.1.1.1", "--state-dir", store}, 2, "not an IP address"},
		{"two stores", []string{"list", "--state-dir", store, "--config", "x.yaml"}, 2, "not both"},
		{"unknown flag", []string{"list", "--state-dir", store, "--yaml"}, 2, "flag provided but not defined"},
		{"enable without thumbprint", []string{"enable", "--state-dir", store}, 2, "give the THUMBPRINT"},
		{"two thumbprints", []string{"remove", strings.Repeat("a", 64), strings.Repeat("b", 64), "--state-dir", store}, 2, "one THUMBPRINT only"},
		{"export without --out", []string{"export", strings.Repeat("a", 64), "--state-dir", store}, 2, "--out"},
		{"request without --out", []string{"request", "--dns", "a.example", "--state-dir", store}, 2, "--out"},
		{"bad subject", []string{"request", "--dns", "a.example", "--subject", "XX=1", "--out", "x", "--state-dir", store}, 2, "unknown attribute"},
		{"list with argument", []string{"list", "extra", "--state-dir", store}, 2, "unexpected argument"},
		// Failures, not usage errors:
		{"import of a missing file", []string{"import", "/nonexistent.pem", "--state-dir", store}, 1, "no such file"},
		{"list of a missing store", []string{"list", "--state-dir", store + "-missing"}, 1, "no certificate store at"},
		{"enable of an unknown thumbprint", []string{"enable", strings.Repeat("a", 64), "--state-dir", store}, 1, "no certificate " + strings.Repeat("a", 64)},
		{"enable of a non-thumbprint", []string{"enable", "xyz", "--state-dir", store}, 1, "64 hex digits"},
		{"bad key type", []string{"new", "--self-signed", "--dns", "a.example", "--key", "dsa", "--state-dir", store}, 1, "unknown key type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := certRun(t, tt.args...)
			if code != tt.code || !strings.Contains(out+errOut, tt.want) {
				t.Errorf("exit %d, output %q %q; want exit %d mentioning %q", code, out, errOut, tt.code, tt.want)
			}
		})
	}
}

// presentedSerials dials addr and returns the serial of the certificate
// the server presented; the client presents client and checks nothing:
// the test asks which certificate is served, not whether it is trusted.
func presentedSerial(t *testing.T, addr string, client *testpki.Leaf) *big.Int {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, &tls.Config{
		InsecureSkipVerify: true,
		Certificates:       []tls.Certificate{client.TLS},
	})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

func TestCertEnableSwitchesARunningManager(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "state")
	ca := testpki.NewCA(t, "Peers CA")
	cfg := tlsmgr.Config{StateDir: store, ClientCAFile: ca.WriteCAFile(t, dir)}

	// The daemon's side: a Manager on the store, watching it, serving TLS.
	watching := make(chan struct{})
	var once sync.Once
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zapcore.InfoLevel), zap.Hooks(func(e zapcore.Entry) error {
		if strings.HasPrefix(e.Message, "watching certificate files") {
			once.Do(func() { close(watching) })
		}
		return nil
	}))
	m, err := tlsmgr.Open(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	reloads := make(chan error, 16)
	m.SetOnReload(func(err error) { reloads <- err })
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() { watchDone <- m.Watch(ctx) }()
	defer func() {
		cancel()
		if err := <-watchDone; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", m.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer func() { ln.Close(); wg.Wait() }()
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			})
		}
	})
	select {
	case <-watching:
	case <-time.After(15 * time.Second):
		t.Fatal("Watch did not start")
	}
	gw := ca.Issue(t, testpki.LeafOptions{CN: "gw1.example.com"})
	if got := presentedSerial(t, ln.Addr().String(), gw); got.Cmp(m.Leaf().SerialNumber) != 0 {
		t.Fatal("not serving the default certificate")
	}

	// The administrator's side: new certificate, enable, export.
	thumb := thumbprintOf(t, certOK(t, "new", "--self-signed", "--dns", "localhost", "--state-dir", store))
	certOK(t, "export", thumb, "--out", filepath.Join(dir, "um.pem"), "--state-dir", store)
	certOK(t, "enable", thumb, "--state-dir", store)

	deadline := time.After(15 * time.Second)
	for done := false; !done; {
		select {
		case err := <-reloads:
			done = err == nil
			if err != nil {
				t.Logf("refused reload on the way: %v", err)
			}
		case <-deadline:
			t.Fatal("the running Manager did not reload after cert enable")
		}
	}
	exported, _ := os.ReadFile(filepath.Join(dir, "um.pem"))
	block, _ := pem.Decode(exported)
	want, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got := presentedSerial(t, ln.Addr().String(), gw); got.Cmp(want.SerialNumber) != 0 {
		t.Fatalf("new handshakes present serial %x, want the enabled certificate's %x", got, want.SerialNumber)
	}
	// A gateway trusting the exported file verifies us.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(exported)
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{gw.TLS}})
	if err != nil {
		t.Fatalf("gateway trusting the exported certificate: %v", err)
	}
	c.Close()
}
