package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/sipptest/testproc"
	"github.com/umrouter/umrouter/internal/testpki"
)

// TestModesAgainstTheRealDaemon runs each client mode of umload, small,
// against umrouter built from this tree, with umload's own UAS as the
// backend: the tool and the daemon agree on SIP, and calls arrive at the
// backend with every ACK before its BYE.
func TestModesAgainstTheRealDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	dir := t.TempDir()
	ca := testpki.NewCA(t, "umload test CA")
	srv := ca.Issue(t, testpki.LeafOptions{CN: "umrouter.test", DNS: []string{"umrouter.test"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	srvCert, srvKey := srv.WriteFiles(t, dir, "server")
	gwCert, gwKey := ca.Issue(t, testpki.LeafOptions{CN: "gw1.test", DNS: []string{"gw1.test"}}).WriteFiles(t, dir, "gw1")
	caFile := ca.WriteCAFile(t, dir)

	u, err := listenUAS(uasConfig{listen: "127.0.0.1:0", readers: 1, buffer: 1 << 20, dur: 2 * time.Minute, maxCalls: 10000})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { u.serve(ctx); close(served) }()
	t.Cleanup(func() { cancel(); <-served })

	target := startDaemon(t, dir, srvCert, srvKey, caFile, u.Addr())
	client := []string{"-target", target, "-cert", gwCert, "-key", gwKey, "-ca", caFile, "-server-name", "umrouter.test", "-quiet"}

	calls := runMode(t, "calls", append(client, "-c", "3", "-n", "30", "-d", "20s", "-inflight", "2")...)
	if calls["calls_ok"] != 30.0 || calls["calls_failed"] != 0.0 {
		t.Errorf("calls: %v", calls)
	}
	paced := runMode(t, "calls", append(client, "-c", "2", "-n", "20", "-d", "20s", "-rate", "100")...)
	if paced["calls_ok"] != 20.0 {
		t.Errorf("paced calls: %v", paced)
	}
	hs := runMode(t, "handshake", append(client, "-c", "2", "-n", "10", "-d", "20s", "-resume")...)
	if hs["connections_ok"] != 10.0 {
		t.Errorf("handshake: %v", hs)
	}
	idle := runMode(t, "idle", append(client, "-c", "5", "-d", "100ms", "-settle", "0s")...)
	if idle["connections"] != 5.0 || idle["connections_lost"] != 0.0 {
		t.Errorf("idle: %v", idle)
	}

	cancel()
	<-served
	if n := u.byeBeforeAck.Load(); n != 0 {
		t.Errorf("the backend got %d BYEs before their ACK", n)
	}
	if n := u.byes.Load(); n != 50 {
		t.Errorf("the backend got %d BYEs, want 50", n)
	}
}

// runMode runs umload in process and returns its JSON line.
func runMode(t *testing.T, mode string, args ...string) map[string]any {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{mode}, args...), &stdout, &stderr)
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var out map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &out); err != nil {
		t.Fatalf("umload %s (exit %d): no JSON line: %v\nstdout: %s\nstderr: %s", mode, code, err, stdout.String(), stderr.String())
	}
	if code != 0 {
		t.Errorf("umload %s: exit %d\n%s\n%s", mode, code, stdout.String(), stderr.String())
	}
	return out
}

// startDaemon builds cmd/umrouter, runs it on loopback with one gateway
// (gw1.test) and one UDP backend, and returns its TLS address once
// /readyz answers.
func startDaemon(t *testing.T, dir, cert, key, caFile, backend string) string {
	t.Helper()
	bin := filepath.Join(dir, "umrouter")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(gobin, "build", "-o", bin, "github.com/umrouter/umrouter/cmd/umrouter").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/umrouter: %v\n%s", err, out)
	}
	tlsPort, err := testproc.FreePort("tcp")
	if err != nil {
		t.Fatal(err)
	}
	adminPort, err := testproc.FreePort("tcp")
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`advertise: umrouter.test
listen: {tls: "127.0.0.1:%d"}
tls: {state_dir: %q, cert_file: %q, key_file: %q, client_ca_file: %q}
gateways: [{name: gw1, address: gw1.test, dial_plan: main}]
dial_plans: [{name: main, security: sip-secured, uri_type: telephone-extension, number_of_digits: 5}]
backends: {transport: udp, servers: [{address: %q}]}
admin: {listen: "127.0.0.1:%d"}
log: {level: warn}
`, tlsPort, filepath.Join(dir, "state"), cert, key, caFile, backend, adminPort)
	cfgFile := filepath.Join(dir, "umrouter.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, bin, "run", "--config", cfgFile)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
		}
		cancel()
		if t.Failed() {
			t.Logf("umrouter log:\n%s", logs.String())
		}
	})
	ready := "http://127.0.0.1:" + strconv.Itoa(adminPort) + "/readyz"
	for deadline := time.Now().Add(20 * time.Second); ; {
		if res, err := http.Get(ready); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return "127.0.0.1:" + strconv.Itoa(tlsPort)
			}
		}
		select {
		case <-exited:
			t.Fatalf("umrouter exited:\n%s", logs.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("umrouter not ready after 20 s:\n%s", logs.String())
		}
	}
}
