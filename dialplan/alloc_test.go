//go:build !race

package dialplan

import "testing"

// TestCheckSDPOfATypicalOfferDoesNotAllocate guards the per-INVITE cost:
// an accepted offer is scanned in place, with no allocation (the race
// detector's instrumentation allocates, hence the build tag).
func TestCheckSDPOfATypicalOfferDoesNotAllocate(t *testing.T) {
	for _, f := range []string{"sdes-gateway.sdp", "sdes-baresip.sdp", "dtls-webrtc-bundle.sdp"} {
		r := invite(TLS, sdpFile(t, f))
		if n := testing.AllocsPerRun(100, func() { securedPlan.Check(r) }); n != 0 {
			t.Errorf("%s: %v allocations per Check", f, n)
		}
	}
}
