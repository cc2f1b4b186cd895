package proxy

import (
	"errors"
	"fmt"
	"net"

	"go.uber.org/zap"
)

// errRestartNeeded refuses a reload that changes what only a restart can.
var errRestartNeeded = errors.New("node_name, advertise, listen.udp, listen.dtls and limits change only with a restart")

// boundListener is a gateway-facing listener and the address it was asked for.
type boundListener struct {
	net.Listener
	addr string
}

// wantedListeners maps transport to address for a routing's startup mode.
func wantedListeners(r *routing) map[string]string {
	w := map[string]string{}
	if r.startupMode == "tls" || r.startupMode == "dual" {
		w["TLS"] = r.listen.TLS
	}
	if r.startupMode == "tcp" || r.startupMode == "dual" {
		w["TCP"] = r.listen.TCP
	}
	return w
}

// setListeners opens the listeners r wants and closes the others. New ones
// are bound first: if one fails, nothing changes. Closing a listener stops
// new connections only; established ones are served to their end.
func (s *Server) setListeners(r *routing) error {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	want := wantedListeners(r)
	opened := map[string]*boundListener{}
	for tp, addr := range want {
		if cur, ok := s.listeners[tp]; ok && cur.addr == addr {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, o := range opened {
				_ = o.Close()
			}
			return fmt.Errorf("listen %s %s: %w", lower(tp), addr, err)
		}
		opened[tp] = &boundListener{Listener: l, addr: addr}
	}
	for tp, cur := range s.listeners {
		if addr, ok := want[tp]; !ok || addr != cur.addr {
			_ = cur.Close()
			delete(s.listeners, tp)
			s.log.Info("listener closed", zap.String("transport", lower(tp)), zap.String("addr", cur.addr))
		}
	}
	for tp, l := range opened {
		s.listeners[tp] = l
		port := int32(l.Addr().(*net.TCPAddr).Port)
		if tp == "TLS" {
			s.tlsPort.Store(port)
		} else {
			s.tcpPort.Store(port)
		}
		s.wg.Add(1)
		go s.acceptLoop(l, tp)
		s.log.Info("listener open", zap.String("transport", lower(tp)), zap.String("addr", l.Addr().String()))
	}
	return nil
}

// closeListeners stops accepting on every listener.
func (s *Server) closeListeners() {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	for tp, l := range s.listeners {
		_ = l.Close()
		delete(s.listeners, tp)
	}
}
