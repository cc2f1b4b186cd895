package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startAdmin binds an admin server on a loopback port chosen by the kernel
// and serves it until the test ends; it returns the base URL and a channel
// that receives Serve's result.
func startAdmin(t *testing.T, ctx context.Context, ready func() error) (string, <-chan error) {
	t.Helper()
	a := NewAdminServer(Config{Listen: "127.0.0.1:0"}, New(), ready, nil)
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	return "http://" + a.Addr().String(), done
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestAdminServerAnswersHealthReadinessAndMetrics(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var notReady atomic.Pointer[error]
	ready := func() error {
		if p := notReady.Load(); p != nil {
			return *p
		}
		return nil
	}
	base, _ := startAdmin(t, ctx, ready)

	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 \"ok\\n\"", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("/readyz while ready = %d %q, want 200 \"ok\\n\"", code, body)
	}
	reason := errors.New("no healthy backend")
	notReady.Store(&reason)
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "no healthy backend") {
		t.Errorf("/readyz while not ready = %d %q, want 503 with the reason", code, body)
	}
	code, body := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	for _, family := range []string{"umrouter_calls_active", "go_goroutines"} {
		if !strings.Contains(body, family) {
			t.Errorf("/metrics lacks %s", family)
		}
	}
	if code, _ := get(t, base+"/nothing"); code != 404 {
		t.Errorf("/nothing = %d, want 404", code)
	}
}

func TestAdminServerRefusesWritesOnEndpoints(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, _ := startAdmin(t, ctx, nil)
	resp, err := http.Post(base+"/healthz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", resp.StatusCode)
	}
}

func TestAdminServerStopsListeningWhenContextIsCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	base, done := startAdmin(t, ctx, nil)
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz = %d before shutdown", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v after cancellation, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of cancellation")
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err == nil {
		conn.Close()
		t.Fatal("admin port still accepts connections after Serve returned")
	}
}

func TestAdminServerReportsAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a := NewAdminServer(Config{Listen: ln.Addr().String()}, New(), nil, nil)
	if err := a.Listen(); err == nil {
		t.Fatal("Listen on a taken address succeeded")
	}
}

func TestAdminServerDisabledServesNothingUntilCancelled(t *testing.T) {
	a := NewAdminServer(Config{}, New(), nil, nil)
	if err := a.Listen(); err != nil {
		t.Fatal(err)
	}
	if a.Addr() != nil {
		t.Fatalf("disabled admin server bound %v", a.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Serve(ctx); err != nil {
		t.Fatal(err)
	}
}
