package proxy

import (
	"context"
	"net"
	"runtime"
	"sync/atomic"
)

// handshakeGate bounds how many TLS handshakes compute at the same time.
//
// A full mutual-TLS handshake costs about a millisecond of CPU (key
// exchange, signature, the peer's chain and its checks), far more than
// relaying a SIP message. Go runs runnable goroutines in turn, so a burst of
// handshakes (a gateway farm reconnecting after an outage, a handshake
// flood from many addresses, which the per-address connection rate does not
// stop) queued every established connection's next message behind them:
// measured with bench/fairness.sh and a packet capture, 22 handshakes
// admitted at once stalled another gateway's calls by 10-50 ms. Through the
// gate, handshakes take at most all the CPUs but one, and the connections
// that carry calls keep the last one.
//
// A handshake holds its slot only while it computes: it gives the slot back
// whenever it waits for the peer (see gatedConn.Read), so peers that are
// slow to answer, on purpose or not, cannot keep the others out. Waiting
// for a slot counts against the handshake timeout.
type handshakeGate struct {
	slots chan struct{}
	// waiting counts the handshakes whose peer's bytes have arrived and
	// that wait for a slot: a backlog of CPU work, for the metrics.
	waiting atomic.Int64
}

// computing is how many handshakes hold a slot now.
func (g *handshakeGate) computing() int { return len(g.slots) }

// newHandshakeGate lets n handshakes compute at once; n < 1 means all the
// CPUs Go uses (GOMAXPROCS) but one, and at least one.
func newHandshakeGate(n int) *handshakeGate {
	if n < 1 {
		n = max(1, runtime.GOMAXPROCS(0)-1)
	}
	return &handshakeGate{slots: make(chan struct{}, n)}
}

// wrap returns the connection a handshake on nc runs over: reads go
// through the gate until finish is called. ctx bounds the wait for a slot
// (the handshake's timeout).
func (g *handshakeGate) wrap(ctx context.Context, nc net.Conn) *gatedConn {
	return &gatedConn{Conn: nc, gate: g, ctx: ctx}
}

// gatedConn is a connection whose handshake goes through a handshakeGate.
// crypto/tls keeps it as the connection under the tls.Conn for the
// connection's whole life; after finish it only passes reads through.
type gatedConn struct {
	net.Conn
	gate *handshakeGate
	ctx  context.Context
	// held: this handshake has a slot. Only the handshake's goroutine
	// touches it (crypto/tls reads on the goroutine that called Handshake).
	held bool
	// done is set by finish, before the connection's reader starts.
	done atomic.Bool
}

// Read gives up the slot while it waits for the peer, and takes one again
// before it returns the bytes that the handshake will compute on.
func (c *gatedConn) Read(b []byte) (int, error) {
	if c.done.Load() {
		return c.Conn.Read(b)
	}
	c.leave()
	n, err := c.Conn.Read(b)
	if err != nil {
		return n, err
	}
	select {
	case c.gate.slots <- struct{}{}: // a free slot: no wait to count
	default:
		c.gate.waiting.Add(1)
		defer c.gate.waiting.Add(-1)
		select {
		case c.gate.slots <- struct{}{}:
		case <-c.ctx.Done():
			return 0, c.ctx.Err()
		}
	}
	c.held = true
	return n, nil
}

// finish ends the handshake's use of the gate, whatever its outcome.
func (c *gatedConn) finish() {
	c.leave()
	c.done.Store(true)
}

func (c *gatedConn) leave() {
	if c.held {
		c.held = false
		<-c.gate.slots
	}
}
