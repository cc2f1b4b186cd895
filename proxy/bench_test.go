package proxy

import (
	"net"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// udpUAS is a minimal in-process backend for benchmarks: it answers INVITE
// with 180 and 200, ACK with nothing and BYE with 200, from one goroutine.
func udpUAS(tb testing.TB) string {
	tb.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	_ = pc.SetReadBuffer(4 << 20)
	tb.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			m, err := sip.ParseMessage(buf[:n])
			if err != nil {
				continue
			}
			req, ok := m.(*sip.Request)
			if !ok {
				continue
			}
			switch req.Method {
			case sip.INVITE:
				ring := sip.NewResponseFromRequest(req, 180, "Ringing", nil)
				tag, _ := ring.To().Params.Get("tag")
				ok := sip.NewResponseFromRequest(req, 200, "OK", []byte(testSDP))
				ok.To().Params.Add("tag", tag)
				ok.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "um", Host: "127.0.0.1", Port: pc.LocalAddr().(*net.UDPAddr).Port}})
				_, _ = pc.WriteToUDPAddrPort([]byte(ring.String()), from)
				_, _ = pc.WriteToUDPAddrPort([]byte(ok.String()), from)
			case sip.BYE, sip.OPTIONS:
				_, _ = pc.WriteToUDPAddrPort([]byte(sip.NewResponseFromRequest(req, 200, "OK", nil).String()), from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// BenchmarkCallThroughProxy measures one full call (INVITE/100/180/200/ACK/
// BYE/200) from a mutual-TLS gateway through the proxy to a UDP backend, all
// in this process: ns/op and allocs/op cover gateway, proxy and backend.
func BenchmarkCallThroughProxy(b *testing.B) {
	pki := newTestPKI(b)
	cfg, plans := baseConfig(udpUAS(b))
	p := startProxy(b, pki, cfg, plans)
	c, err := dialGateway(b, p.tlsAddr, pki, &pki.gw.TLS, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := placeCall(c); err != nil {
			b.Fatal(err)
		}
	}
}
