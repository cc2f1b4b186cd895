package tlsmgr

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/umrouter/umrouter/internal/testpki"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func storeConfig(t *testing.T) Config {
	ca := testpki.NewCA(t, "Peers Root")
	dir := t.TempDir()
	return Config{StateDir: filepath.Join(dir, "state"), ClientCAFile: ca.WriteCAFile(t, dir)}
}

func TestFirstStartCreatesSelfSignedDefaultInStore(t *testing.T) {
	cfg := storeConfig(t)
	core, logs := observer.New(zapcore.InfoLevel)
	m, err := Open(cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if !m.SelfSigned() {
		t.Error("default certificate not reported self-signed")
	}
	leaf := m.Leaf()
	host, _ := os.Hostname()
	host = strings.ToLower(host)
	if !slices.Contains(leaf.DNSNames, "localhost") || (host != "" && !slices.Contains(leaf.DNSNames, host)) {
		t.Errorf("SANs = %v, want hostname %q and localhost", leaf.DNSNames, host)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 364*24*3600e9 {
		t.Errorf("validity %v, want a year", d)
	}
	thumb := Thumbprint(leaf)
	active, err := os.ReadFile(filepath.Join(cfg.StateDir, "active"))
	if err != nil || strings.TrimSpace(string(active)) != thumb {
		t.Fatalf("active = %q (%v), want %s", active, err, thumb)
	}
	assertMode(t, cfg.StateDir, 0o700)
	assertMode(t, filepath.Join(cfg.StateDir, "certs", thumb+".key"), 0o600)
	created := logs.FilterLevelExact(zapcore.InfoLevel).FilterMessageSnippet("self-signed default")
	if created.Len() != 1 || !strings.Contains(created.All()[0].ContextMap()["cert_file"].(string), cfg.StateDir) {
		t.Errorf("no INFO naming where the self-signed default was created; logs: %v", logs.All())
	}

	again, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := Thumbprint(again.Leaf()); got != thumb {
		t.Errorf("second Open uses %s, want the stored default %s", got, thumb)
	}
}

func TestStoreReloadFollowsActivePointer(t *testing.T) {
	// What `cert enable` will do: add a certificate, point active at it, reload.
	cfg := storeConfig(t)
	m, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := testpki.NewCA(t, "Corp CA").Issue(t, serverOptions())
	st := &Store{dir: cfg.StateDir}
	thumb, err := st.add([]*x509.Certificate{leaf.Cert}, leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.setActive(thumb); err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if Thumbprint(m.Leaf()) != thumb || m.SelfSigned() {
		t.Errorf("after enable: thumbprint %s self-signed %v, want %s CA-issued", Thumbprint(m.Leaf()), m.SelfSigned(), thumb)
	}
}

func TestStoreRefusesBadActivePointer(t *testing.T) {
	tests := []struct{ name, active, want string }{
		{"path traversal", "../../etc/passwd", "not a SHA-256 thumbprint"},
		{"unknown thumbprint", strings.Repeat("ab", 32), "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := storeConfig(t)
			m, err := Open(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			old := Thumbprint(m.Leaf())
			writeFile(t, filepath.Join(cfg.StateDir, "active"), tt.active)
			if err := m.Reload(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Reload = %v, want error containing %q", err, tt.want)
			}
			if Thumbprint(m.Leaf()) != old {
				t.Error("refused reload changed the certificate")
			}
			if _, err := Open(cfg, nil); err == nil {
				t.Error("Open minted a new identity instead of refusing the bad active pointer")
			}
		})
	}
}

func TestUnwritableStateDirIsClearError(t *testing.T) {
	// A regular file where the directory should be fails even for root,
	// unlike permission bits.
	cfg := storeConfig(t)
	blocker := filepath.Join(t.TempDir(), "file")
	writeFile(t, blocker, "")
	cfg.StateDir = filepath.Join(blocker, "state")
	_, err := Open(cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "state_dir "+cfg.StateDir) {
		t.Fatalf("Open = %v, want an error naming state_dir %s", err, cfg.StateDir)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s mode = %v, want %v", path, got, want)
	}
}
