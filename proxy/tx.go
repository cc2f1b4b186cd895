package proxy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// txState is where a proxied transaction stands.
type txState int

const (
	// txCalling: forwarded, no response from the next hop yet.
	txCalling txState = iota
	// txProceeding: a response (100 included) came back; no final yet.
	txProceeding
	// txCompleted: a non-2xx final was relayed upstream; kept only to absorb
	// the upstream ACK and retransmissions.
	txCompleted
	// txTerminated: gone from the tables.
	txTerminated
)

// Transaction timing (RFC 3261 §17 and §16.6/16.7, with the proxy's Timer C).
const (
	t1              = 500 * time.Millisecond
	t2              = 4 * time.Second
	timerC          = 180 * time.Second // INVITE after a provisional
	timerF          = 32 * time.Second  // non-INVITE
	completedWindow = 32 * time.Second  // absorb upstream ACK of a non-2xx
	sweepInterval   = 100 * time.Millisecond
)

// transaction is one request that umrouter forwarded (a server transaction
// toward the sender paired with a client transaction toward the next hop).
// It holds only what answering needs; no goroutine or timer of its own:
// one sweeper serves every transaction's deadlines.
type transaction struct {
	mu sync.Mutex

	branch    string // our branch toward the next hop (client key)
	serverKey string // the sender's branch and method (server key)
	method    sip.RequestMethod
	callID    string

	in flow // where responses go
	// countedOn is the stream connection whose liveTxs counts this
	// transaction while it is in the table (guarded by txTable.mu).
	countedOn *streamConn
	inSide    side
	req       *sip.Request // as received, its own Route entries popped; see request
	// parser parses raw, for a request relayed from a scan of its bytes
	// (req nil until a rare path needs the model).
	parser *sip.Parser
	// inDialog: the request's To has a tag (RFC 3261 section 12.2).
	inDialog bool
	raw      []byte // req's bytes as received (forwarding edits a copy)
	popped   int    // how many of raw's Route entries were ours
	via      string // our Via line as last sent, CRLF included
	out      flow
	bytes    []byte // as forwarded, for UDP retransmission

	backend *backendServer   // next hop when toward the pool
	tried   []*backendServer // servers already attempted (failover)
	// counted is the server whose active-call count this INVITE holds;
	// a 2xx hands the count to the dialog table, anything else returns it.
	counted *backendServer
	gateway *Gateway // the gateway side of the call
	plan    string

	// probe marks a health-check OPTIONS: it has no sender, and its
	// outcome goes to onFinal instead (code 408 when nothing came back).
	probe   bool
	onFinal func(code int, retryAfter time.Duration)

	state txState
	// settled mirrors "state is txCompleted" for readers that must not take
	// mu while holding the table's lock (txTable.len).
	settled        atomic.Bool
	gotProvisional bool // a 101-199 came back: failover is no longer allowed
	cancelled      bool // CANCEL received from the sender
	lastResponse   []byte
	// tryingDue is when umrouter answers the INVITE with 100 Trying if no
	// response went upstream by then (zero: not, or done).
	tryingDue    time.Time
	started      time.Time
	deadline     time.Time // when the current state times out
	retransAt    time.Time // next UDP retransmission (zero: none)
	retransEvery time.Duration
}

// request returns the request as sipgo models it, parsing it on first use
// when it was relayed from a scan; nil when sipgo cannot parse it.
func (tx *transaction) request() *sip.Request {
	if tx.req == nil && tx.parser != nil {
		m, err := tx.parser.ParseSIP(tx.raw)
		tx.parser = nil
		if r, ok := m.(*sip.Request); ok && err == nil {
			if tx.in != nil {
				r.SetSource(tx.in.remoteAddr().String()) // rport/received of local answers
			}
			tx.req = r
		}
	}
	return tx.req
}

// txTable indexes live transactions by both keys.
type txTable struct {
	mu     sync.Mutex
	server map[string]*transaction
	client map[string]*transaction
	n      atomic.Int64 // len(client), readable without the lock
}

// count is the number of transactions held, completed ones included.
func (t *txTable) count() int64 { return t.n.Load() }

func (t *txTable) init() {
	t.server = map[string]*transaction{}
	t.client = map[string]*transaction{}
}

func (t *txTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, tx := range t.client {
		if !tx.settled.Load() {
			n++
		}
	}
	return n
}

func (t *txTable) byServerKey(k string) *transaction {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.server[k]
}

func (t *txTable) byBranch(b string) *transaction {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.client[b]
}

func (t *txTable) add(tx *transaction) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.server[tx.serverKey] = tx
	t.client[tx.branch] = tx
	t.n.Store(int64(len(t.client)))
	if c, ok := tx.in.(*streamConn); ok {
		c.liveTxs.Add(1)
		tx.countedOn = c
	}
}

// from returns the transactions that connection c sent and that are still
// in the table. A connection that has none is answered without looking:
// connections that carried only OPTIONS (a keep-alive, a reconnecting
// gateway, a flood) close without a walk over every transaction. It reads
// countedOn, which the table's lock guards, not tx.in, which tx.mu does.
func (t *txTable) from(c *streamConn) []*transaction {
	if c.liveTxs.Load() == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var txs []*transaction
	for _, tx := range t.client {
		if tx.countedOn == c {
			txs = append(txs, tx)
		}
	}
	return txs
}

// rekey moves tx to a new client branch (failover sends a new request).
func (t *txTable) rekey(tx *transaction, old string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.client, old)
	t.client[tx.branch] = tx
}

func (t *txTable) remove(tx *transaction) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.server[tx.serverKey] == tx {
		delete(t.server, tx.serverKey)
	}
	if t.client[tx.branch] == tx {
		delete(t.client, tx.branch)
	}
	t.n.Store(int64(len(t.client)))
	if tx.countedOn != nil {
		tx.countedOn.liveTxs.Add(-1)
		tx.countedOn = nil
	}
}

// sweep calls expire for every transaction whose deadline or retransmission
// time has passed, until ctx ends.
func (t *txTable) sweep(ctx context.Context, wg *sync.WaitGroup, expire func(*transaction, time.Time)) {
	defer wg.Done()
	tick := time.NewTicker(sweepInterval)
	defer tick.Stop()
	var due []*transaction
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			due = due[:0]
			t.mu.Lock()
			for _, tx := range t.client {
				due = append(due, tx)
			}
			t.mu.Unlock()
			for _, tx := range due {
				expire(tx, now)
			}
		}
	}
}

// serverKey identifies the sender's transaction (RFC 3261 §17.2.3): the
// branch and sent-by of its top Via, and the method, with ACK and CANCEL
// matched to the INVITE they refer to by the caller.
func serverKey(via *sip.ViaHeader, method sip.RequestMethod) string {
	branch, _ := via.Params.Get("branch")
	return branch + "|" + via.Host + "|" + string(method)
}
