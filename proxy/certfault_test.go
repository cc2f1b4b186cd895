package proxy

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/umrouter/umrouter/internal/sipptest"
	"github.com/umrouter/umrouter/internal/testpki"
	"github.com/umrouter/umrouter/metrics"
	"github.com/umrouter/umrouter/tlsmgr"
)

// certFaultProxy is a running proxy whose server certificate lives in a
// directory of its own (the client CA stays elsewhere), watched as the
// daemon watches it, with reloads counted as the daemon counts them and
// the certificate manager's log lines kept for inspection.
type certFaultProxy struct {
	*testProxy
	logs *observer.ObservedLogs
}

// startCertFaultProxy runs the proxy like startProxy, with the certificate
// and key at certFile and keyFile, tlsmgr.Watch running, and the reload
// hook of cmd/umrouter/daemon.go counting into umrouter_reloads_total.
func startCertFaultProxy(t *testing.T, pki *testPKI, certFile, keyFile, backend string) *certFaultProxy {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Core(), core))
	certs, err := tlsmgr.Open(tlsmgr.Config{CertFile: certFile, KeyFile: keyFile, ClientCAFile: pki.caFile}, log.Named("tlsmgr"))
	if err != nil {
		t.Fatalf("tlsmgr.Open: %v", err)
	}
	m := metrics.New()
	// As cmd/umrouter/daemon.go counts reloads (tlsmgr imports no metrics).
	certs.SetOnReload(func(err error) {
		result := "ok"
		if err != nil {
			result = "error"
		}
		m.Reloads.WithLabelValues("certificate", result).Inc()
	})
	cfg, plans := baseConfig(backend)
	cfg.SetDefaults()
	s, err := New(cfg, plans, certs, m, log.Named("proxy"))
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	runDone := make(chan error, 1)
	watchDone := make(chan error, 1)
	go func() { runDone <- s.Run(ctx, ready) }()
	go func() { watchDone <- certs.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		for name, done := range map[string]chan error{"proxy": runDone, "watch": watchDone} {
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Errorf("%s did not stop", name)
			}
		}
	})
	deadline := time.After(10 * time.Second)
	for _, step := range []struct {
		what string
		ch   <-chan struct{}
	}{{"proxy ready", ready}, {"certificate watch in place", certs.Watching()}} {
		select {
		case <-step.ch:
		case err := <-runDone:
			t.Fatalf("Run ended before %s: %v", step.what, err)
		case err := <-watchDone:
			t.Fatalf("Watch ended before %s: %v", step.what, err)
		case <-deadline:
			t.Fatalf("timed out waiting for: %s", step.what)
		}
	}
	tp := &testProxy{s: s, certs: certs, m: m, pki: pki, tlsAddr: fmt.Sprintf("127.0.0.1:%d", s.tlsPort.Load())}
	return &certFaultProxy{testProxy: tp, logs: logs}
}

func (p *certFaultProxy) reloads(result string) float64 {
	return testutil.ToFloat64(p.m.Reloads.WithLabelValues("certificate", result))
}

// refusalLogged reports whether tlsmgr logged, at ERROR, a refused reload
// whose error names path.
func (p *certFaultProxy) refusalLogged(path string) bool {
	for _, e := range p.logs.FilterLevelExact(zap.ErrorLevel).All() {
		if strings.Contains(e.Message, "refused") && strings.Contains(fmt.Sprint(e.ContextMap()["error"]), path) {
			return true
		}
	}
	return false
}

// certFault breaks the certificate files in some way, then repairs them
// with a new certificate.
type certFault struct {
	name string
	// layout writes the first certificate and returns the paths the
	// configuration names; break_ and repair act on them.
	layout func(t *testing.T, dir string, leaf *testpki.Leaf) (certFile, keyFile string)
	// brk breaks the files; the refusal's error must name broken.
	brk func(t *testing.T, dir, certFile, keyFile string) (broken string)
	// repair publishes leaf where the configuration looks.
	repair func(t *testing.T, dir, certFile, keyFile string, leaf *testpki.Leaf)
}

// plainFiles: tls.crt and tls.key in dir/certs.
func plainFiles(t *testing.T, dir string, leaf *testpki.Leaf) (string, string) {
	certs := filepath.Join(dir, "certs")
	if err := os.Mkdir(certs, 0o700); err != nil {
		t.Fatal(err)
	}
	return leaf.WriteFiles(t, certs, "tls")
}

// writePair replaces the key, then the certificate, each by a rename, as
// an operator's script (or cert-manager's agent) would.
func writePair(t *testing.T, certFile, keyFile string, leaf *testpki.Leaf) {
	t.Helper()
	for _, f := range []struct {
		path string
		data []byte
	}{{keyFile, leaf.KeyPEM}, {certFile, leaf.CertPEM}} {
		tmp := f.path + ".tmp"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
}

var certFaults = []certFault{
	{
		name:   "certificate directory deleted, then recreated",
		layout: plainFiles,
		brk: func(t *testing.T, dir, certFile, _ string) string {
			if err := os.RemoveAll(filepath.Dir(certFile)); err != nil {
				t.Fatal(err)
			}
			return certFile
		},
		repair: func(t *testing.T, dir, certFile, keyFile string, leaf *testpki.Leaf) {
			if err := os.Mkdir(filepath.Dir(certFile), 0o700); err != nil {
				t.Fatal(err)
			}
			writePair(t, certFile, keyFile, leaf)
		},
	},
	{
		name:   "certificate file replaced with garbage",
		layout: plainFiles,
		brk: func(t *testing.T, dir, certFile, _ string) string {
			if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return certFile
		},
		repair: func(t *testing.T, dir, certFile, keyFile string, leaf *testpki.Leaf) {
			writePair(t, certFile, keyFile, leaf)
		},
	},
	{
		name:   "certificate file replaced by a directory",
		layout: plainFiles,
		brk: func(t *testing.T, dir, certFile, _ string) string {
			if err := os.Remove(certFile); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(certFile, 0o700); err != nil {
				t.Fatal(err)
			}
			return certFile
		},
		repair: func(t *testing.T, dir, certFile, keyFile string, leaf *testpki.Leaf) {
			if err := os.Remove(certFile); err != nil {
				t.Fatal(err)
			}
			writePair(t, certFile, keyFile, leaf)
		},
	},
	{
		// A Kubernetes Secret volume whose timestamped directory vanished
		// under its ..data link: tls.crt -> ..data/tls.crt dangles.
		name: "secret volume with a dangling symbolic link",
		layout: func(t *testing.T, dir string, leaf *testpki.Leaf) (string, string) {
			s := &secretDir{dir: dir}
			s.publish(t, leaf)
			return filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		},
		brk: func(t *testing.T, dir, certFile, _ string) string {
			target, err := os.Readlink(filepath.Join(dir, "..data"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(dir, target)); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(certFile); !os.IsNotExist(err) {
				t.Fatalf("%s should dangle now, stat says %v", certFile, err)
			}
			return certFile
		},
		repair: func(t *testing.T, dir, _, _ string, leaf *testpki.Leaf) {
			s := &secretDir{dir: dir, n: 100} // a version name not used yet; links exist
			s.publish(t, leaf)
		},
	},
}

// TestBrokenCertificateFilesKeepTheOldCertificateServing: when the
// certificate directory is deleted, a file is replaced by garbage or by a
// directory, or a Secret's link dangles, the reload is refused (counted
// with result "error" and logged at ERROR naming the file), new mutual-TLS
// handshakes still get the old certificate, and calls complete on old and
// new connections; once a valid certificate is back, the next handshake
// gets it within seconds.
func TestBrokenCertificateFilesKeepTheOldCertificateServing(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	serverLeaf := func() *testpki.Leaf {
		return pki.ca.Issue(t, testpki.LeafOptions{CN: "umrouter", DNS: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}})
	}
	for _, tc := range certFaults {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			oldLeaf := serverLeaf()
			certFile, keyFile := tc.layout(t, dir, oldLeaf)
			p := startCertFaultProxy(t, pki, certFile, keyFile, uas.Addr())
			oldSerial := oldLeaf.Cert.SerialNumber.String()
			if got, err := servedSerial(p.tlsAddr, pki); err != nil || got != oldSerial {
				t.Fatalf("before the fault: served serial %s (%v), want %s", got, err, oldSerial)
			}
			established := p.gateway(t)
			if err := placeCall(established); err != nil {
				t.Fatalf("call before the fault: %v", err)
			}

			broken := tc.brk(t, dir, certFile, keyFile)
			waitFor(t, `umrouter_reloads_total{kind="certificate",result="error"} counted`, func() bool {
				return p.reloads("error") >= 1
			})
			if !p.refusalLogged(broken) {
				t.Errorf("no ERROR log line naming %s; tlsmgr logged:\n%s", broken, dumpLogs(p.logs))
			}
			if n := p.reloads("ok"); n != 0 {
				t.Errorf("reloads ok = %v after the fault, want 0", n)
			}
			if got, err := servedSerial(p.tlsAddr, pki); err != nil || got != oldSerial {
				t.Fatalf("after the fault: new handshake got serial %s (%v), want the old %s", got, err, oldSerial)
			}
			if err := placeCall(established); err != nil {
				t.Errorf("call on the connection established before the fault: %v", err)
			}
			if err := placeCall(p.gateway(t)); err != nil {
				t.Errorf("call on a connection opened after the fault: %v", err)
			}

			newLeaf := serverLeaf()
			tc.repair(t, dir, certFile, keyFile, newLeaf)
			newSerial := newLeaf.Cert.SerialNumber.String()
			waitFor(t, "the repaired certificate served to new handshakes", func() bool {
				got, err := servedSerial(p.tlsAddr, pki)
				return err == nil && got == newSerial
			})
			if p.reloads("ok") < 1 {
				t.Errorf("the repair was not counted as a reload with result ok")
			}
			if err := placeCall(p.gateway(t)); err != nil {
				t.Errorf("call after the repair: %v", err)
			}
			if err := placeCall(established); err != nil {
				t.Errorf("call on the old connection after the repair: %v", err)
			}
		})
	}
}

func dumpLogs(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		fmt.Fprintf(&b, "  %s %s %v\n", e.Level, e.Message, e.ContextMap())
	}
	return b.String()
}
