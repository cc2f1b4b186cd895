package proxy

import (
	"fmt"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/kamailiotest"
	"github.com/umrouter/umrouter/internal/sipptest"
	"github.com/umrouter/umrouter/internal/testpki"
)

// TestKamailioSBCForwardsCallsOverTLSThroughUmrouter puts a real SBC in
// front: SIPp UAC -> Kamailio (UDP in, mutual TLS out with its own client
// certificate) -> umrouter -> SIPp UAS. In-dialog ACK and BYE follow both
// Kamailio's and umrouter's Record-Route.
func TestKamailioSBCForwardsCallsOverTLSThroughUmrouter(t *testing.T) {
	uas := sipptest.StartUAS(t, sipptest.UASOptions{Scenario: "uas.xml"})
	pki := newTestPKI(t)
	const sbcName = "sbc1.example.test"
	sbc := pki.ca.Issue(t, testpki.LeafOptions{CN: sbcName, DNS: []string{sbcName}})
	sbcCert, sbcKey := sbc.WriteFiles(t, t.TempDir(), "sbc")
	cfg, plans := baseConfig(uas.Addr())
	cfg.Gateways = append(cfg.Gateways, Gateway{Name: "sbc1", Address: sbcName, Kind: "sbc", DialPlan: "main"})
	p := startProxy(t, pki, cfg, plans)

	k := kamailiotest.Start(t, kamailiotest.Options{
		NextHop:        fmt.Sprintf("sip:%s;transport=tls", p.tlsAddr),
		ClientCertFile: sbcCert, ClientKeyFile: sbcKey,
		CAFile:     pki.caFile,
		ServerName: "localhost",
	})
	const n = 50
	res := sipptest.RunUAC(t, sipptest.UACOptions{
		Remote: k.UDPAddr(), Scenario: "uac_tls.xml", Service: "12345",
		Calls: n, Rate: 50, Limit: 10, Timeout: 60 * time.Second,
	})
	if res.Successful != n || res.Failed != 0 {
		t.Fatalf("SIPp UAC behind Kamailio: %d successful, %d failed, want %d\n%s\nkamailio log:\n%s", res.Successful, res.Failed, n, res.ErrorLog, k.Log())
	}
	if st, err := uas.WaitSuccessful(n, 10*time.Second); err != nil {
		t.Fatalf("SIPp UAS: %v (%+v)", err, st)
	}
}
