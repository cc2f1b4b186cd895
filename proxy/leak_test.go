package proxy

import (
	"context"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/umrouter/umrouter/internal/sipptest"
	"github.com/umrouter/umrouter/metrics"
	"github.com/umrouter/umrouter/tlsmgr"
)

// TestGatewayGoneMidTransactionLeavesNothingBehind: a gateway that drops
// its connection while its INVITE rings gets the call cancelled toward the
// backend, the transaction removed, and once the server stops no goroutine
// of it is left.
func TestGatewayGoneMidTransactionLeavesNothingBehind(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas_ringing_cancel.xml"})
	pki := newTestPKI(t)
	cfg, plans := baseConfig(uas.Addr())
	cfg.SetDefaults()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	certs, err := tlsmgr.Open(tlsmgr.Config{CertFile: pki.srvCert, KeyFile: pki.srvKey, ClientCAFile: pki.caFile}, log)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, plans, certs, metrics.New(), log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ready) }()
	<-ready

	c, err := dialGateway(t, "127.0.0.1:"+itoa(int(s.tlsPort.Load())), pki, &pki.gw.TLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := c.invite("12345")
	c.send(inv)
	for r := c.response(5 * time.Second); r.StatusCode != 180; r = c.response(5 * time.Second) {
	}
	c.conn.Close()
	waitFor(t, "the abandoned transaction to be removed", func() bool { return s.txs.count() == 0 })
	// The backend got a CANCEL and ended its side of the call.
	if _, err := uas.WaitSuccessful(1, 10*time.Second); err != nil {
		t.Fatalf("backend call not cancelled: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The client's reader goroutine ends with its connection.
	<-c.errs
}

func itoa(n int) string { return strconv.Itoa(n) }
