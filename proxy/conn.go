package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// side says which way a peer faces: gateways send calls in, backends are the
// UM servers calls go to.
type side int

const (
	sideGateway side = iota
	sideBackend
)

func (s side) String() string {
	if s == sideBackend {
		return "backend"
	}
	return "gateway"
}

// flow is a path a message can be sent on: a stream connection, or a UDP
// socket with a remote address.
type flow interface {
	send(b []byte) error
	// viaTransport is the Via transport token: TLS, TCP or UDP.
	viaTransport() string
	// flowID identifies a stream connection in Via and Record-Route
	// parameters; 0 for UDP.
	flowID() uint64
	// remoteAddr is the peer's address.
	remoteAddr() netip.AddrPort
}

// peer is who is at the other end of a connection, decided once per
// connection from its certificate (TLS) or source address (TCP, UDP).
type peer struct {
	side    side
	gateway *Gateway // set for identified gateways
	backend string   // backend server address, for sideBackend
	// refusal, when not empty, is why every request of this peer is refused
	// with 403 and the connection closed.
	refusal string
	// names are the identities read from the certificate, for logs.
	names []string
}

// streamConn is a TCP or TLS connection. One goroutine reads it and handles
// its messages in arrival order; writers serialise on writeMu.
type streamConn struct {
	id     uint64
	conn   net.Conn
	tp     string // "TLS" or "TCP"
	remote netip.AddrPort
	// who is the peer, replaced (never modified) when a reload makes the
	// read loop decide again; other goroutines read it to find a gateway's
	// connection.
	who atomic.Pointer[peer]
	// peerGen is the routing generation peer was decided under; a reload
	// makes the next message decide again (a gateway may have been removed
	// or moved to another dial plan).
	peerGen uint64
	// dialed connections were opened by umrouter toward a known peer and
	// keep the identity they were dialed for.
	dialed bool
	// metricSide is the side the connection was counted under.
	metricSide side

	writeMu sync.Mutex
	closed  atomic.Bool
	// liveTxs counts the transactions in the table that this connection
	// sent (see txTable.from).
	liveTxs atomic.Int64
	// peerClosed: the peer ended the stream (EOF), so close skips TLS's
	// close_notify, which nobody would read.
	peerClosed atomic.Bool
	// closeAfterWrite is set by handlers that refuse the peer: the read loop
	// closes the connection once the current message is answered.
	closeAfterWrite atomic.Bool
	// pause, set by a handler on the read goroutine, is how long the read
	// loop waits before reading the next message (see ratePause).
	pause time.Duration
}

// ratePause is how long, on average, a connection is not read after one
// of its requests was refused for its gateway's request rate. The 503 asks
// the gateway to wait a second; a gateway that floods anyway would otherwise
// make umrouter parse and refuse every message it sends, as fast as it
// sends them, and take the CPU its neighbours' calls need (issue 8,
// fairness). Not reading pushes the flood back into the sender's TCP
// window instead; its in-dialog requests wait too, about a quarter of a
// second.
//
// Each pause is jittered(ratePause): a flooding gateway's connections are
// all refused within the same few milliseconds, when its bucket runs dry;
// paused for the same time they would all be read again at the same
// instant, with their backlogs, every ratePause. Measured
// (bench/fairness.sh with a packet capture, 50 connections): 60 admitted
// INVITEs and their refused siblings arrived within 10 ms every 260 ms,
// and the other gateway's calls that met such a burst queued behind it for
// 5-50 ms, which made its p99 6x the quiet one. Spread over a window as
// wide as the pause, the same flood is read a few messages at a time.
const ratePause = 250 * time.Millisecond

// writeTimeout bounds a write to a peer that stopped reading, so one stuck
// peer cannot hold a handler forever.
const writeTimeout = 5 * time.Second

// errTooLargeForDTLS refuses a message that one DTLS record cannot carry
// to the peer (see maxDTLSMessage).
var errTooLargeForDTLS = errors.New("message too large for a DTLS record")

func (c *streamConn) send(b []byte) error {
	if c.closed.Load() {
		return net.ErrClosed
	}
	if c.tp == "DTLS" && len(b) > maxDTLSMessage {
		return fmt.Errorf("%w: %d bytes, at most %d", errTooLargeForDTLS, len(b), maxDTLSMessage)
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.conn.Write(b)
	if err != nil {
		c.close()
	}
	return err
}

// identity returns who the peer is.
func (c *streamConn) identity() *peer { return c.who.Load() }

func (c *streamConn) viaTransport() string       { return c.tp }
func (c *streamConn) flowID() uint64             { return c.id }
func (c *streamConn) remoteAddr() netip.AddrPort { return c.remote }

func (c *streamConn) close() {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	// A gateway that closed first gets no close_notify: the alert would be
	// an encryption and a write (or a reset) per connection for nothing,
	// which counts when gateways reconnect for every request.
	if tc, ok := c.conn.(*tls.Conn); ok && c.peerClosed.Load() {
		_ = tc.NetConn().Close()
		return
	}
	_ = c.conn.Close()
}

// tlsState returns the connection's TLS state, or nil for TCP.
func (c *streamConn) tlsState() *tls.ConnectionState {
	if tc, ok := c.conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		return &st
	}
	return nil
}

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// isClosed reports whether err only says the connection ended.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF)
}

func addrPortOf(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.AddrPort()
	case *net.UDPAddr:
		return v.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// readBufferSize is each stream connection's read buffer: a typical INVITE
// with its SDP fits, longer messages are read in several pieces (the
// framing accumulates them), and an idle connection holds only this much
// of umrouter's own beside the TLS stack's buffers.
const readBufferSize = 2048

// readLoop reads messages until the connection ends and hands each to
// handle, in order, on this goroutine.
func (s *Server) readLoop(c *streamConn) {
	defer s.dropConn(c)
	fr := frameReader{
		src:      c.conn,
		maxBytes: s.cfg.Limits.MaxMessageBytes,
		pong:     func() { _ = c.send([]byte("\r\n")) },
		// A message under way must arrive whole within message_timeout: a
		// peer trickling bytes holds a goroutine and a buffer only that long.
		started: func() { _ = c.conn.SetReadDeadline(time.Now().Add(s.cfg.Limits.MessageTimeout)) },
		idle:    func() { _ = c.conn.SetReadDeadline(time.Now().Add(s.cfg.Limits.IdleTimeout)) },
	}
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(s.cfg.Limits.IdleTimeout))
		var frame []byte
		var err error
		if !fr.buffered() {
			err = fr.await()
		}
		if err == nil {
			frame, err = fr.next()
		}
		if err != nil {
			switch {
			case isClosed(err) || c.closed.Load():
				c.peerClosed.Store(errors.Is(err, io.EOF))
			case isTimeout(err):
				s.log.Debug("connection idle, closing", connFields(c)...)
			default:
				reason := framingReason(err)
				s.m.MalformedMessages.WithLabelValues(lower(c.tp), reason).Inc()
				code, phrase := 400, "Bad Request"
				if reason == "too_large" {
					code, phrase = 413, "Request Entity Too Large"
				}
				if resp := errorResponseFor(fr.partial(), code, phrase); resp != nil {
					s.m.Refusals.WithLabelValues(strconv.Itoa(code), reason).Inc()
					_ = c.send(resp)
				}
				s.log.Warn("connection closed: unreadable stream", append(connFields(c), zap.String("reason", reason), errField(err))...)
			}
			return
		}
		s.handleFrame(c, frame)
		if c.closeAfterWrite.Load() {
			return
		}
		if !s.waitPause(c) {
			return
		}
	}
}

// waitPause waits out the pause a handler set on c's read goroutine (see
// ratePause) before the read loop reads c again; false when the server
// stops meanwhile.
func (s *Server) waitPause(c *streamConn) bool {
	d := c.pause
	if d <= 0 {
		return true
	}
	c.pause = 0
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func framingReason(err error) string {
	switch {
	case errors.Is(err, errMessageTooLarge):
		return "too_large"
	case errors.Is(err, errTooManyHeaders):
		return "too_many_headers"
	case errors.Is(err, errNoContentLength), errors.Is(err, errBadContentLength):
		return "content_length"
	}
	return "other"
}

// udpFlow is a remote address reached through one of our UDP sockets.
type udpFlow struct {
	pc   *net.UDPConn
	addr netip.AddrPort
}

func (u udpFlow) send(b []byte) error {
	_, err := u.pc.WriteToUDPAddrPort(b, u.addr)
	return err
}
func (u udpFlow) viaTransport() string       { return "UDP" }
func (u udpFlow) flowID() uint64             { return 0 }
func (u udpFlow) remoteAddr() netip.AddrPort { return u.addr }
