package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/pion/dtls/v3"
	"go.uber.org/zap"

	"github.com/umrouter/umrouter/tlsmgr"
)

// maxDTLSMessage is the largest SIP message umrouter accepts or sends over
// DTLS. pion/dtls reads each datagram into an 8192-byte buffer (its
// inboundBufferSize and pion/transport's receiveMTU), so a record of a
// larger message would be cut and dropped without a word; umrouter refuses
// to send one instead (513 Message Too Large to the request's sender) and
// says so in the log. One SIP message travels in one DTLS record (as repro
// does): the record overhead (13-byte header, AEAD nonce and tag) leaves
// this much for the message.
const maxDTLSMessage = 8192 - 64

// DTLSProvider is implemented by certificate managers that can serve SIP
// over DTLS (tlsmgr.Manager).
type DTLSProvider interface {
	DTLSServerConfig() *dtls.Config
}

// listenDTLS starts the SIP-over-DTLS listener on listen.dtls.
func (s *Server) listenDTLS(addr string) error {
	dp, ok := s.certs.(DTLSProvider)
	if !ok {
		return errors.New("listen.dtls: the certificate manager cannot serve DTLS")
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("listen dtls %s: %w", addr, err)
	}
	l, err := dtls.Listen("udp", ua, dp.DTLSServerConfig())
	if err != nil {
		return fmt.Errorf("listen dtls %s: %w", addr, err)
	}
	s.dtlsListener = l
	s.dtlsPort.Store(int32(l.Addr().(*net.UDPAddr).Port))
	s.wg.Add(1)
	go s.acceptLoop(l, "DTLS")
	s.log.Info("listener open", zap.String("transport", "dtls"), zap.String("addr", l.Addr().String()))
	return nil
}

// handshakeDTLS finishes a DTLS association's handshake with the
// handshake timeout (pion v3's Accept returns before it) and identifies
// the peer by RFC 5922 like a TLS one.
func (s *Server) handshakeDTLS(c *streamConn, dc *dtls.Conn) error {
	hctx, cancel := context.WithTimeout(s.ctx, s.cfg.Limits.HandshakeTimeout)
	defer cancel()
	if err := dc.HandshakeContext(hctx); err != nil {
		if errors.Is(hctx.Err(), context.DeadlineExceeded) {
			return &tlsmgr.VerifyError{Reason: tlsmgr.ReasonTimeout, Err: err}
		}
		return err
	}
	return nil
}

// dtlsReadBufferSize is each DTLS association's read buffer: pion/dtls
// reads a datagram into 8192 bytes (see maxDTLSMessage), so no record it
// hands over is larger, and an idle association holds 8 KiB of umrouter's
// own rather than 64.
const dtlsReadBufferSize = 8192

// readDatagrams reads a DTLS association: every record is one SIP message.
// After a refusal for its gateway's rate the association is not read for a
// while, as a TLS connection is (see ratePause): its datagrams wait in
// pion's buffers, and past them are dropped, which an unreliable transport
// allows (the gateway's retransmissions come later) rather than parsed and
// refused as fast as they arrive.
func (s *Server) readDatagrams(c *streamConn) {
	defer s.dropConn(c)
	buf := make([]byte, dtlsReadBufferSize)
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(s.cfg.Limits.IdleTimeout))
		n, err := c.conn.Read(buf)
		if err != nil {
			if isTimeout(err) {
				s.log.Debug("DTLS association idle, closing", connFields(c)...)
			}
			return
		}
		if n <= 4 {
			continue // keep-alive (CRLF)
		}
		s.handleFrame(c, buf[:n])
		if c.closeAfterWrite.Load() || !s.waitPause(c) {
			return
		}
	}
}
