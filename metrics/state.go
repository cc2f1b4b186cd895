package metrics

import (
	"sort"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// AdminStates are the values of the state label of
// umrouter_backend_admin_state, in the proxy's spelling: an operator's
// decision about a backend server, as the source product's gateways have
// Enabled, Disabled and NoNewCalls.
var AdminStates = []string{"enabled", "disabled", "no-new-calls"}

// State is what the node looks like at the moment of a scrape: values that
// the proxy already keeps for its own decisions, read rather than mirrored
// into gauges that could drift from them.
type State struct {
	// Ready is the readiness /readyz reports.
	Ready bool
	// Draining is true once the node refuses new calls (POST /drain or a
	// graceful stop).
	Draining bool
	// Backends are the configured backend servers.
	Backends []BackendState
	// Handshakes are the TLS and DTLS handshakes in progress.
	Handshakes HandshakeState
}

// HandshakeState counts the handshakes in progress: InProgress in all, of
// which Computing hold a slot of the CPUs handshakes may use and
// WaitingCPU wait for one; the others wait for their peer.
type HandshakeState struct {
	InProgress, Computing, WaitingCPU int
}

// BackendState is one backend server in a State.
type BackendState struct {
	Address string
	// Admin is one of AdminStates; any other value is reported as is.
	Admin       string
	ActiveCalls int64
}

// SetStateSource installs fn, called at every scrape (from the HTTP
// server's goroutines, so it must be safe for concurrent use and cheap) to
// publish:
//
//	umrouter_ready                              1 when ready to take calls
//	umrouter_draining                           1 when refusing new calls
//	umrouter_backend_admin_state{backend,state} 1 for the current state, 0 for the others
//	umrouter_backend_active_calls{backend}      established calls per backend server
//	umrouter_tls_handshakes_in_progress{state}  computing, waiting_cpu, waiting_peer
//
// Until it is called, or with a nil fn, these families are absent. The
// metrics package cannot ask the proxy itself: the proxy imports metrics.
func (m *Metrics) SetStateSource(fn func() State) {
	if fn == nil {
		m.state.fn.Store(nil)
		return
	}
	m.state.fn.Store(&fn)
}

// stateCollector turns a State into metrics at scrape time.
type stateCollector struct {
	fn atomic.Pointer[func() State]
}

var (
	readyDesc = prometheus.NewDesc("umrouter_ready",
		"1 when the node is ready to take calls (listeners up, a backend up, not draining), else 0.", nil, nil)
	drainingDesc = prometheus.NewDesc("umrouter_draining",
		"1 when the node refuses new calls while established calls continue, else 0.", nil, nil)
	backendAdminStateDesc = prometheus.NewDesc("umrouter_backend_admin_state",
		"Administrative state of each backend server: 1 for the current state (enabled, disabled, no-new-calls), 0 for the others.",
		[]string{"backend", "state"}, nil)
	backendActiveCallsDesc = prometheus.NewDesc("umrouter_backend_active_calls",
		"Established calls per backend server.", []string{"backend"}, nil)
	handshakesDesc = prometheus.NewDesc("umrouter_tls_handshakes_in_progress",
		"TLS and DTLS handshakes admitted and not finished, by state: computing (on the CPUs handshakes may use, all but one), waiting_cpu (for such a CPU), waiting_peer.",
		[]string{"state"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- readyDesc
	ch <- drainingDesc
	ch <- backendAdminStateDesc
	ch <- backendActiveCallsDesc
	ch <- handshakesDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.fn.Load()
	if p == nil {
		return
	}
	st := (*p)()
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, boolValue(st.Ready))
	ch <- prometheus.MustNewConstMetric(drainingDesc, prometheus.GaugeValue, boolValue(st.Draining))
	h := st.Handshakes
	// The three counts are read one after the other: clamp what is left.
	peer := max(0, h.InProgress-h.Computing-h.WaitingCPU)
	ch <- prometheus.MustNewConstMetric(handshakesDesc, prometheus.GaugeValue, float64(h.Computing), "computing")
	ch <- prometheus.MustNewConstMetric(handshakesDesc, prometheus.GaugeValue, float64(h.WaitingCPU), "waiting_cpu")
	ch <- prometheus.MustNewConstMetric(handshakesDesc, prometheus.GaugeValue, float64(peer), "waiting_peer")
	seen := make(map[string]bool, len(st.Backends))
	for _, b := range st.Backends {
		if seen[b.Address] {
			continue // a duplicate series would fail the whole scrape
		}
		seen[b.Address] = true
		states := AdminStates
		if !known(b.Admin) {
			states = append(append([]string(nil), AdminStates...), b.Admin)
			sort.Strings(states)
		}
		for _, s := range states {
			ch <- prometheus.MustNewConstMetric(backendAdminStateDesc, prometheus.GaugeValue, boolValue(s == b.Admin), b.Address, s)
		}
		ch <- prometheus.MustNewConstMetric(backendActiveCallsDesc, prometheus.GaugeValue, float64(b.ActiveCalls), b.Address)
	}
}

func known(state string) bool {
	for _, s := range AdminStates {
		if s == state {
			return true
		}
	}
	return false
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Families returns the names of every metric family this package declares
// (the Go runtime and process collectors excepted), sorted: what alert
// rules and dashboards may refer to.
func (m *Metrics) Families() []string {
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range m.collectors() {
			c.Describe(ch)
		}
		close(ch)
	}()
	var names []string
	for d := range ch {
		names = append(names, fqName(d))
	}
	sort.Strings(names)
	return names
}
