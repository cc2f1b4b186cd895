package proxy

import (
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// probeBackends sends an OPTIONS to every backend server each
// health.interval until the server stops; a server is marked down after
// down_after failed probes in a row and up after up_after good ones.
// Any response but 503 and 408 counts as alive: a UM server that does not
// implement OPTIONS (405) still answers.
func (s *Server) probeBackends() {
	defer s.wg.Done()
	h := s.rt().backends.Health
	tick := time.NewTicker(h.Interval)
	defer tick.Stop()
	// Servers start as up, so that a restart takes calls at once; the first
	// probes go out now rather than an interval later.
	for first := true; ; first = false {
		if !first {
			select {
			case <-s.ctx.Done():
				return
			case <-tick.C:
			}
		}
		rt := s.rt()
		for _, b := range rt.pool.servers {
			if *rt.backends.Health.Probe && AdminState(b.admin.Load()) != AdminDisabled {
				s.probe(b)
			}
		}
		stale, n := s.dialogs.expire(time.Now())
		for _, b := range stale {
			b.active.Add(-1)
		}
		s.m.CallsActive.Set(float64(n))
	}
}

// probe sends one OPTIONS to b; the result arrives through the
// transaction's onFinal callback, on whichever goroutine ends it.
func (s *Server) probe(b *backendServer) {
	if !b.probeInFlight.CompareAndSwap(false, true) {
		return
	}
	started := time.Now()
	req := s.probeRequest(b)
	tx := &transaction{
		serverKey: "probe|" + b.addr,
		method:    sip.OPTIONS,
		callID:    callID(req),
		req:       req,
		started:   started,
		probe:     true,
	}
	tx.onFinal = func(code int, retry time.Duration) {
		b.probeInFlight.Store(false)
		ok := code != 503 && code != 408
		s.m.BackendProbeSeconds.WithLabelValues(b.addr).Observe(time.Since(started).Seconds())
		s.recordProbe(b, ok, code, retry)
	}
	out, err := s.backendFlow(b)
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if err == nil {
		err = s.sendTx(tx, out, b)
	}
	if err != nil {
		s.txs.remove(tx)
		tx.state = txTerminated
		b.probeInFlight.Store(false)
		s.recordProbe(b, false, 0, 0)
	}
}

// recordProbe updates b's probe counters and its up/down state.
func (s *Server) recordProbe(b *backendServer, ok bool, code int, retry time.Duration) {
	h := s.rt().backends.Health
	if ok {
		b.fails.Store(0)
		if n := b.oks.Add(1); n >= int64(h.UpAfter) && b.probeDown.Load() {
			b.probeDown.Store(false)
			s.m.BackendUp.WithLabelValues(b.addr).Set(1)
			s.log.Info("backend up", zap.String("backend", b.addr))
		}
		return
	}
	b.oks.Store(0)
	if code == 503 && retry > 0 {
		s.rt().pool.markDown(b, retry)
	}
	if n := b.fails.Add(1); n >= int64(h.DownAfter) && !b.probeDown.Load() {
		b.probeDown.Store(true)
		s.m.BackendUp.WithLabelValues(b.addr).Set(0)
		s.log.Warn("backend down: health probes failed", zap.String("backend", b.addr), zap.Int64("failures", n), zap.String("last_code", strconv.Itoa(code)))
	}
}

// probeRequest is the OPTIONS that asks b whether it is alive.
func (s *Server) probeRequest(b *backendServer) *sip.Request {
	n := s.branchSeq.Add(1)
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: b.host, Port: b.port})
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: s.cfg.NodeName, Host: s.cfg.Advertise}, Params: sip.NewParams()}
	from.Params.Add("tag", strconv.FormatUint(n, 36))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: b.host, Port: b.port}, Params: sip.NewParams()})
	cid := sip.CallIDHeader(s.branchPrefix + "probe." + strconv.FormatUint(n, 36))
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetBody(nil)
	return req
}
