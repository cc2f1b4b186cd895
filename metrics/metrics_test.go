package metrics

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// testCounter sums every series of a counter vector.
func testCounter(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	sum := 0.0
	for m := range ch {
		var pb dto.Metric
		_ = m.Write(&pb)
		sum += pb.GetCounter().GetValue()
	}
	return sum
}

// promtool returns the path of Prometheus' promtool, skipping the test
// when it is missing unless CI is "true".
func promtool(t *testing.T) string {
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

// touched is a Metrics whose every vector has a series, as a daemon that
// carried traffic has.
func touched() *Metrics {
	m := New()
	m.Connections.WithLabelValues("tls", "gateway").Set(1)
	m.Handshakes.WithLabelValues("refused", "unknown_ca").Inc()
	m.Requests.WithLabelValues("INVITE", "gw1", "main").Inc()
	m.Responses.WithLabelValues("INVITE", "2xx", "gw1", "main").Inc()
	m.Refusals.WithLabelValues("403", "not_a_gateway").Inc()
	m.CallSetupSeconds.Observe(0.02)
	m.BackendUp.WithLabelValues("127.0.0.1:5070").Set(1)
	m.BackendProbeSeconds.WithLabelValues("127.0.0.1:5070").Observe(0.001)
	m.BackendRequests.WithLabelValues("127.0.0.1:5070", "ok").Inc()
	m.CertificateNotAfter.WithLabelValues("server").Set(1.8e9)
	m.Reloads.WithLabelValues("config", "ok").Inc()
	m.MalformedMessages.WithLabelValues("tls", "parse").Inc()
	m.AdminAuthFailures.WithLabelValues("bad_token").Inc()
	m.BuildInfo.WithLabelValues("dev", "go1.26").Set(1)
	m.SetStateSource(func() State {
		return State{Ready: true, Backends: []BackendState{
			{Address: "127.0.0.1:5070", Admin: "no-new-calls", ActiveCalls: 3},
			{Address: "127.0.0.1:5071", Admin: "enabled"},
		}}
	})
	return m
}

func TestStateCollectorPublishesBackendStatesAndCalls(t *testing.T) {
	m := touched()
	want := `
# HELP umrouter_backend_active_calls Established calls per backend server.
# TYPE umrouter_backend_active_calls gauge
umrouter_backend_active_calls{backend="127.0.0.1:5070"} 3
umrouter_backend_active_calls{backend="127.0.0.1:5071"} 0
# HELP umrouter_backend_admin_state Administrative state of each backend server: 1 for the current state (enabled, disabled, no-new-calls), 0 for the others.
# TYPE umrouter_backend_admin_state gauge
umrouter_backend_admin_state{backend="127.0.0.1:5070",state="disabled"} 0
umrouter_backend_admin_state{backend="127.0.0.1:5070",state="enabled"} 0
umrouter_backend_admin_state{backend="127.0.0.1:5070",state="no-new-calls"} 1
umrouter_backend_admin_state{backend="127.0.0.1:5071",state="disabled"} 0
umrouter_backend_admin_state{backend="127.0.0.1:5071",state="enabled"} 1
umrouter_backend_admin_state{backend="127.0.0.1:5071",state="no-new-calls"} 0
# HELP umrouter_draining 1 when the node refuses new calls while established calls continue, else 0.
# TYPE umrouter_draining gauge
umrouter_draining 0
# HELP umrouter_ready 1 when the node is ready to take calls (listeners up, a backend up, not draining), else 0.
# TYPE umrouter_ready gauge
umrouter_ready 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want),
		"umrouter_backend_active_calls", "umrouter_backend_admin_state", "umrouter_draining", "umrouter_ready"); err != nil {
		t.Fatal(err)
	}
}

// The handshakes in progress are split by state; what waits for its peer
// is the rest, never negative although the counts are read one by one.
func TestStateCollectorPublishesHandshakesInProgress(t *testing.T) {
	for _, tc := range []struct {
		st                   HandshakeState
		computing, cpu, peer float64
	}{
		{HandshakeState{InProgress: 10, Computing: 1, WaitingCPU: 4}, 1, 4, 5},
		{HandshakeState{InProgress: 2, Computing: 1, WaitingCPU: 3}, 1, 3, 0},
	} {
		m := New()
		m.SetStateSource(func() State { return State{Handshakes: tc.st} })
		want := fmt.Sprintf(`
# HELP umrouter_tls_handshakes_in_progress TLS and DTLS handshakes admitted and not finished, by state: computing (on the CPUs handshakes may use, all but one), waiting_cpu (for such a CPU), waiting_peer.
# TYPE umrouter_tls_handshakes_in_progress gauge
umrouter_tls_handshakes_in_progress{state="computing"} %v
umrouter_tls_handshakes_in_progress{state="waiting_cpu"} %v
umrouter_tls_handshakes_in_progress{state="waiting_peer"} %v
`, tc.computing, tc.cpu, tc.peer)
		if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "umrouter_tls_handshakes_in_progress"); err != nil {
			t.Errorf("%+v: %v", tc.st, err)
		}
	}
}

func TestStateCollectorIsSilentWithoutASource(t *testing.T) {
	m := New()
	n, err := testutil.GatherAndCount(m.Registry, "umrouter_ready", "umrouter_backend_admin_state")
	if err != nil || n != 0 {
		t.Fatalf("without a source: %d series, %v", n, err)
	}
	// Duplicate addresses must not break the scrape.
	m.SetStateSource(func() State {
		return State{Backends: []BackendState{{Address: "a:1", Admin: "enabled"}, {Address: "a:1", Admin: "disabled"}}}
	})
	if _, err := m.Registry.Gather(); err != nil {
		t.Fatalf("gather with a duplicate backend: %v", err)
	}
}

func TestFamiliesNamesEveryDeclaredMetric(t *testing.T) {
	got := New().Families()
	for _, want := range []string{
		"umrouter_connections", "umrouter_tls_handshakes_total", "umrouter_requests_total",
		"umrouter_responses_total", "umrouter_refusals_total", "umrouter_calls_active",
		"umrouter_call_setup_seconds", "umrouter_backend_up", "umrouter_backend_admin_state",
		"umrouter_backend_active_calls", "umrouter_backend_probe_seconds",
		"umrouter_certificate_not_after_timestamp_seconds", "umrouter_reloads_total",
		"umrouter_ready", "umrouter_draining", "umrouter_build_info",
		"umrouter_tls_handshakes_in_progress",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("Families lacks %s (got %v)", want, got)
		}
	}
	for _, name := range got {
		if !strings.HasPrefix(name, "umrouter_") {
			t.Errorf("family %q lacks the umrouter_ prefix", name)
		}
	}
}

// TestNamesFollowPrometheusConventions runs Prometheus' own linters, the
// client library's and promtool's, over a registry with every series set.
func TestNamesFollowPrometheusConventions(t *testing.T) {
	m := touched()
	problems, err := testutil.GatherAndLint(m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(promtool(t), "check", "metrics")
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestLabelValuesAreLowCardinality(t *testing.T) {
	// No label may be named after something unbounded.
	bad := regexp.MustCompile(`^(call_id|callid|number|user|peer|remote|ip|uri)$`)
	families, err := touched().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if bad.MatchString(l.GetName()) {
					t.Errorf("%s has a high-cardinality label %q", f.GetName(), l.GetName())
				}
			}
		}
	}
}
