// Package metrics declares umrouter's Prometheus collectors, once, and serves
// them on the admin HTTP server with the health endpoints and the admin API
// (status, reload, drain, backend states), whose actions the daemon supplies
// through Control: this package knows nothing of the proxy.
//
// Labels are low-cardinality by design: transport, gateway name, dial plan,
// backend address, SIP method, response class, result and reason. A Call-ID,
// a number or a peer address is never a label.
package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector umrouter updates. Create it with New.
type Metrics struct {
	// Registry is what the admin server's /metrics serves.
	Registry *prometheus.Registry

	// Connections counts open SIP connections by transport (tls, tcp, udp, dtls)
	// and side (gateway, backend).
	Connections *prometheus.GaugeVec
	// Handshakes counts finished TLS handshakes by result (ok, refused) and
	// reason (ok, no_certificate, unknown_ca, expired, revoked, not_a_gateway,
	// protocol_version, timeout, other).
	Handshakes *prometheus.CounterVec
	// Requests counts SIP requests received from peers by method, gateway and dial plan.
	Requests *prometheus.CounterVec
	// Responses counts SIP responses sent to gateways by method, code class
	// (1xx..6xx), gateway and dial plan.
	Responses *prometheus.CounterVec
	// Refusals counts requests umrouter answered itself with an error, by code and reason.
	Refusals *prometheus.CounterVec
	// CallsActive is the number of calls (INVITE dialogs) in progress.
	CallsActive prometheus.Gauge
	// CallSetupSeconds observes INVITE to first final response.
	CallSetupSeconds prometheus.Histogram
	// BackendUp is 1 when a backend server is considered healthy.
	BackendUp *prometheus.GaugeVec
	// BackendProbeSeconds observes health-probe round trips per backend.
	BackendProbeSeconds *prometheus.HistogramVec
	// BackendRequests counts requests forwarded to a backend by result (ok, error).
	BackendRequests *prometheus.CounterVec
	// CertificateNotAfter is each certificate's expiry as a Unix timestamp, by role
	// (server, client, client_ca).
	CertificateNotAfter *prometheus.GaugeVec
	// Reloads counts configuration and certificate reloads by kind (config,
	// certificate) and result (ok, error).
	Reloads *prometheus.CounterVec
	// MalformedMessages counts messages that could not be parsed, by transport and reason.
	MalformedMessages *prometheus.CounterVec
	// DroppedResponses counts responses umrouter received and relayed to
	// nobody (a response has no answer to carry a refusal), by reason
	// (refused_peer: from a peer whose requests are refused; not_ours: for
	// a branch umrouter never sent).
	DroppedResponses *prometheus.CounterVec
	// AdminAuthFailures counts admin API requests refused for want of
	// valid credentials, by reason (no_credentials, bad_token).
	AdminAuthFailures *prometheus.CounterVec
	// BuildInfo is 1, labelled with the version of the running binary.
	BuildInfo *prometheus.GaugeVec

	// state is read at every scrape by the state collector (see SetStateSource).
	state stateCollector
}

// New creates the collectors and registers them, with the Go runtime and
// process collectors, on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "umrouter_connections", Help: "Open SIP connections by transport and side.",
		}, []string{"transport", "side"}),
		Handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umrouter_tls_handshakes_total", Help: "Finished TLS handshakes by result and reason.",
		}, []string{"result", "reason"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umrouter_requests_total", Help: "SIP requests received by method, gateway and dial plan.",
		}, []string{"method", "gateway", "dial_plan"}),
		Responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umrouter_responses_total", Help: "SIP responses sent to gateways by method, code class, gateway and dial plan.",
		}, []string{"method", "class", "gateway", "dial_plan"}),
		Refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umrouter_refusals_total", Help: "Requests refused by umrouter itself, by SIP code and reason.",
		}, []string{"code", "reason"}),
		CallsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "umrouter_calls_active", Help: "Calls (INVITE transactions and dialogs) in progress.",
		}),
		CallSetupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "umrouter_call_setup_seconds",
			Help:    "Time from INVITE to its first final response.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		BackendUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "umrouter_backend_up", Help: "1 when the backend server is considered healthy.",
		}, []string{"backend"}),
		BackendProbeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "umrouter_backend_probe_seconds",
			Help:    "Round trip of OPTIONS health probes to backend servers.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"backend"}),
		BackendRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umrouter_backend_requests_total", Help: "Requests forwarded to backend servers by result.",
		}, []string{"backend", "result"}),
		CertificateNotAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "umrouter_certificate_not_after_timestamp_seconds", Help: "Certificate expiry as a Unix timestamp, by role.",
		}, []string{"role"}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umrouter_reloads_total", Help: "Configuration and certificate reloads by kind and result.",
		}, []string{"kind", "result"}),
		MalformedMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umrouter_malformed_messages_total", Help: "Messages that could not be parsed, by transport and reason.",
		}, []string{"transport", "reason"}),
		DroppedResponses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umrouter_dropped_responses_total", Help: "Responses received and relayed to nobody, by reason.",
		}, []string{"reason"}),
		AdminAuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "umrouter_admin_auth_failures_total", Help: "Admin API requests refused for want of valid credentials, by reason.",
		}, []string{"reason"}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "umrouter_build_info", Help: "Always 1; the labels name the running binary's version and Go version.",
		}, []string{"version", "go_version"}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.Registry.MustRegister(m.collectors()...)
	return m
}

// collectors are umrouter's own collectors, in declaration order.
func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.Connections, m.Handshakes, m.Requests, m.Responses, m.Refusals, m.CallsActive,
		m.CallSetupSeconds, m.BackendUp, m.BackendProbeSeconds, m.BackendRequests, m.CertificateNotAfter, m.Reloads,
		m.MalformedMessages, m.DroppedResponses, m.AdminAuthFailures, m.BuildInfo, &m.state,
	}
}

// fqName extracts a descriptor's metric name. prometheus.Desc keeps it
// unexported; its String form reads `Desc{fqName: "NAME", ...` (a test
// through Families notices if a client_golang upgrade changes that).
func fqName(d *prometheus.Desc) string {
	s := d.String()
	const key = `fqName: "`
	i := strings.Index(s, key)
	if i < 0 {
		return ""
	}
	s = s[i+len(key):]
	if j := strings.IndexByte(s, '"'); j >= 0 {
		return s[:j]
	}
	return ""
}
