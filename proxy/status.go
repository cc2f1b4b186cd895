package proxy

import (
	"errors"
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
	// Handshakes are the TLS and DTLS handshakes in progress.
	Handshakes HandshakeStatus `json:"handshakes"`
}

// HandshakeStatus counts the handshakes in progress (admitted at accept and
// not finished, at most limits.max_handshakes) by what they are doing.
// Computing ones hold a slot of the CPUs handshakes may use (all but one);
// WaitingCPU ones have their peer's bytes and wait for such a slot; the
// rest wait for their peer (DTLS ones, which pion runs, always count
// there).
type HandshakeStatus struct {
	InProgress int `json:"in_progress"`
	Computing  int `json:"computing"`
	WaitingCPU int `json:"waiting_cpu"`
}

// Status returns a snapshot of the proxy's state.
func (s *Server) Status() Status {
	st := Status{
		Node:         s.cfg.NodeName,
		Ready:        s.Ready(),
		Draining:     s.draining(),
		Connections:  s.connCount.Load(),
		Transactions: s.txs.len(),
		CallsActive:  s.dialogs.len(),
		Handshakes: HandshakeStatus{
			InProgress: s.handshakesInProgress(),
			Computing:  s.handshakes.computing(),
			WaitingCPU: int(s.handshakes.waiting.Load()),
		},
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
	if s.drain.CompareAndSwap(notDraining, drainingForAdmin) {
		s.log.Info("draining: new calls are refused, established calls continue")
	}
}

// DrainToStop is Drain for a shutdown: the same refusals, but Undrain
// cannot end it, so that an operator's undrain racing a SIGTERM never
// reopens a node on its way out.
func (s *Server) DrainToStop() {
	s.drain.Store(drainingToStop)
}

// ErrStopping is Undrain's answer while the node drains for a shutdown.
var ErrStopping = errors.New("the node is stopping: its drain cannot be undone")

// Undrain ends a drain begun by Drain: new calls are taken again and
// readiness follows the listeners and backends once more (the end of
// maintenance, without a restart that would cut the established calls).
// It returns ErrStopping during a shutdown's drain, and nil when the node
// was not draining.
func (s *Server) Undrain() error {
	if s.drain.CompareAndSwap(drainingForAdmin, notDraining) {
		s.log.Info("drain ended: new calls are taken again")
	}
	if s.drain.Load() == drainingToStop {
		return ErrStopping
	}
	return nil
}

// States of Server.drain.
const (
	notDraining int32 = iota
	drainingForAdmin
	drainingToStop
)

// draining reports whether new calls are refused.
func (s *Server) draining() bool { return s.drain.Load() != notDraining }
