package proxy

import (
	"fmt"
	"time"

	"go.uber.org/zap"
)

// BackendStatus is one backend server as the admin API shows it.
type BackendStatus struct {
	Address string `json:"address"`
	Weight  int    `json:"weight"`
	// Admin is the operator's state: enabled, disabled or no-new-calls.
	Admin string `json:"admin"`
	// Up is the health state: probes pass and no failure keeps it away.
	Up          bool  `json:"up"`
	ActiveCalls int64 `json:"active_calls"`
}

// Status is a snapshot of the proxy for the admin API and `umrouter ctl status`.
type Status struct {
	Node         string          `json:"node"`
	Ready        bool            `json:"ready"`
	Draining     bool            `json:"draining"`
	Connections  int64           `json:"connections"`
	Transactions int             `json:"transactions"`
	CallsActive  int             `json:"calls_active"`
	Gateways     []string        `json:"gateways"`
	Backends     []BackendStatus `json:"backends"`
}

// Status returns a snapshot of the proxy's state.
func (s *Server) Status() Status {
	st := Status{
		Node:         s.cfg.NodeName,
		Ready:        s.Ready(),
		Draining:     s.draining.Load(),
		Connections:  s.connCount.Load(),
		Transactions: s.txs.len(),
		CallsActive:  s.dialogs.len(),
	}
	for _, g := range s.rt().gateways {
		st.Gateways = append(st.Gateways, g.Name)
	}
	now := time.Now()
	for _, b := range s.rt().pool.servers {
		st.Backends = append(st.Backends, BackendStatus{
			Address: b.addr, Weight: int(b.weight.Load()), Admin: AdminState(b.admin.Load()).String(),
			Up: b.up(now), ActiveCalls: b.active.Load(),
		})
	}
	return st
}

// SetBackendState sets the administrative state of the backend server
// configured as addr. It takes effect for the next new call.
func (s *Server) SetBackendState(addr string, state AdminState) error {
	b := s.rt().pool.byAddr(addr)
	if b == nil {
		return fmt.Errorf("no backend server %q", addr)
	}
	b.admin.Store(int32(state))
	s.log.Info("backend administrative state changed", zap.String("backend", addr), zap.String("state", state.String()))
	return nil
}

// Drain makes the node refuse new calls with 503 and Retry-After while
// established dialogs and transactions in progress continue; readiness
// turns false so that load balancers stop sending new traffic.
func (s *Server) Drain() {
	if s.draining.CompareAndSwap(false, true) {
		s.log.Info("draining: new calls are refused, established calls continue")
	}
}

// Undrain ends a drain: new calls are taken again and readiness follows
// the listeners and backends once more (the end of maintenance, without a
// restart that would cut the established calls).
func (s *Server) Undrain() {
	if s.draining.CompareAndSwap(true, false) {
		s.log.Info("drain ended: new calls are taken again")
	}
}
