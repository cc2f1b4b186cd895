package sipptest

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestBuiltinUACToUAS: 20 calls from a SIPp UAC to a SIPp UAS over UDP.
func TestBuiltinUACToUAS(t *testing.T) {
	uas := StartUAS(t, UASOptions{})
	res := RunUAC(t, UACOptions{Remote: uas.Addr(), Calls: 20, Rate: 100, Limit: 20, Timeout: 30 * time.Second})
	if res.ExitCode != 0 || res.Successful != 20 || res.Failed != 0 {
		t.Fatalf("UAC: exit %d, %d successful, %d failed, want 0/20/0\n%s", res.ExitCode, res.Successful, res.Failed, res.ErrorLog)
	}
	// The built-in UAS ends a call 4 s after the BYE (timewait).
	if st, err := uas.WaitSuccessful(20, 20*time.Second); err != nil {
		t.Fatalf("UAS: %v (%+v)", err, st)
	}
	if st := uas.Stop(); st.SuccessfulCalls != 20 || st.FailedCalls != 0 {
		t.Fatalf("UAS final stats %+v, want 20 successful, 0 failed", st)
	}
}

// TestScenarioFiles runs each UAS scenario of testdata/sipp against the UAC
// that completes it.
func TestScenarioFiles(t *testing.T) {
	cases := []struct {
		uas, uac  string
		transport Transport
	}{
		{"uas.xml", "", UDP},
		{"uas.xml", "uac_tls.xml", UDP},
		{"uas.xml", "uac_tls.xml", TCP},
		{"uas_180_200_fast.xml", "", UDP},
		{"uas_ringing_cancel.xml", "uac_cancel.xml", UDP},
		{"uas_503.xml", "uac_503.xml", UDP},
	}
	for _, c := range cases {
		t.Run(c.uas+"+"+c.uac+"/"+string(c.transport), func(t *testing.T) {
			t.Parallel()
			const n = 5
			uas := StartUAS(t, UASOptions{Scenario: c.uas, Transport: c.transport})
			res := RunUAC(t, UACOptions{Remote: uas.Addr(), Scenario: c.uac, Transport: c.transport,
				Calls: n, Rate: 50, Timeout: 30 * time.Second})
			if res.ExitCode != 0 || res.Successful != n {
				t.Fatalf("UAC: exit %d, %d successful, %d failed\n%s", res.ExitCode, res.Successful, res.Failed, res.ErrorLog)
			}
			if st, err := uas.WaitSuccessful(n, 15*time.Second); err != nil {
				t.Fatalf("UAS: %v (%+v)\n%s", err, st, uas.ErrorLog())
			}
			if st := uas.Stop(); st.FailedCalls != 0 {
				t.Fatalf("UAS failed calls: %+v\n%s", st, uas.ErrorLog())
			}
		})
	}
}

// TestCancelKeepsInviteVias checks that the 487 of uas_ringing_cancel.xml
// carries every Via of the INVITE although the CANCEL had only one.
func TestCancelKeepsInviteVias(t *testing.T) {
	uas := StartUAS(t, UASOptions{Scenario: "uas_ringing_cancel.xml"})
	res := RunUAC(t, UACOptions{Remote: uas.Addr(), Scenario: "uac_cancel.xml", Calls: 1, TraceMessages: true, Timeout: 20 * time.Second})
	if res.Successful != 1 {
		t.Fatalf("UAC: %+v", res)
	}
	b, err := os.ReadFile(res.MessageLog)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(b), "SIP/2.0 487")
	if i < 0 {
		t.Fatalf("no 487 in the message log:\n%s", b)
	}
	if !strings.Contains(string(b[i:]), "Via: SIP/2.0/UDP 127.0.0.1") {
		t.Fatalf("487 lacks the INVITE's Via:\n%s", b[i:])
	}
}

func TestStatsParse(t *testing.T) {
	p := t.TempDir() + "/s.csv"
	data := "StartTime;CurrentCall;IncomingCall(C);SuccessfulCall(C);FailedCall(C);\n" +
		"x;1;3;2;1;\n" +
		"y;0;9;8;1;\n" +
		"z;0;10;9" // incomplete row: ignored
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := readStats(p)
	if err != nil {
		t.Fatal(err)
	}
	if st != (Stats{IncomingCalls: 9, SuccessfulCalls: 8, FailedCalls: 1}) {
		t.Fatalf("got %+v", st)
	}
}
