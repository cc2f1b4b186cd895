package tlsmgr

import (
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/testpki"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestCertificateWarnings(t *testing.T) {
	ca := testpki.NewCA(t, "Corp CA")
	now := time.Now()
	year := now.Add(365 * 24 * time.Hour)
	named := ca.Issue(t, testpki.LeafOptions{CN: "um.example.com", NotAfter: year,
		DNS: []string{"um.example.com", "*.pool.example.com"}, IPs: []net.IP{net.IPv4(192, 0, 2, 1)},
		URIs: []string{"sip:edge.example.com"}})
	tests := []struct {
		name      string
		leaf      *testpki.Leaf
		advertise string
		want      []string // fragments, one per expected warning
	}{
		{name: "names advertise", leaf: named, advertise: "um.example.com"},
		{name: "advertise with port and trailing dot", leaf: named, advertise: "UM.example.com.:5061"},
		{name: "wildcard names advertise", leaf: named, advertise: "um2.pool.example.com"},
		{name: "IP SAN names advertise", leaf: named, advertise: "192.0.2.1"},
		{name: "SIP URI names advertise", leaf: named, advertise: "edge.example.com"},
		{name: "no advertise configured", leaf: named, advertise: ""},
		{name: "does not name advertise", leaf: named, advertise: "other.example.com",
			want: []string{`does not name advertise host "other.example.com"`}},
		{name: "expires within 30 days", advertise: "um.example.com",
			leaf: ca.Issue(t, testpki.LeafOptions{DNS: []string{"um.example.com"}, NotAfter: now.Add(10 * 24 * time.Hour)}),
			want: []string{"expires in 9 days"}},
		{name: "expires within hours", advertise: "um.example.com",
			leaf: ca.Issue(t, testpki.LeafOptions{DNS: []string{"um.example.com"}, NotAfter: now.Add(5*time.Hour + time.Minute)}),
			want: []string{"expires in 5 hours"}},
		{name: "server auth only", advertise: "um.example.com",
			leaf: ca.Issue(t, testpki.LeafOptions{DNS: []string{"um.example.com"}, NotAfter: year, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}),
			want: []string{"no clientAuth"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := certWarnings(tt.leaf.Cert, tt.advertise, now)
			if len(got) != len(tt.want) {
				t.Fatalf("warnings = %q, want %d", got, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("warning %q does not mention %q", got[i], w)
				}
			}
		})
	}
}

func TestOpenAndReloadLogWarningsAtWARN(t *testing.T) {
	f := newFixture(t)
	f.cfg.Advertise = "umrouter.example.com"
	core, logs := observer.New(zapcore.WarnLevel)
	m, err := Open(f.cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	// Testpki certificates live 24 hours, so every certificate here also
	// carries the expiry warning.
	if w := m.Warnings(); len(w) != 2 || !strings.Contains(w[0], "umrouter.example.com") || !strings.Contains(w[1], "expires in 2") {
		t.Fatalf("Warnings = %q, want the advertise mismatch and the expiry", w)
	}
	if logs.FilterMessageSnippet("does not name advertise").Len() != 1 {
		t.Errorf("Open did not log the mismatch at WARN: %v", logs.All())
	}
	o := serverOptions()
	o.DNS = append(o.DNS, "umrouter.example.com")
	f.ca.Issue(t, o).WriteFiles(t, f.dir, "server")
	if err := m.Reload(); err != nil {
		t.Fatal(err)
	}
	if w := m.Warnings(); len(w) != 1 || strings.Contains(w[0], "advertise") {
		t.Errorf("Warnings after reloading a certificate naming advertise = %q, want the expiry only", w)
	}
	if n := logs.FilterMessageSnippet("expires in").Len(); n != 2 {
		t.Errorf("expiry warning logged %d times, want at Open and at Reload", n)
	}
}
