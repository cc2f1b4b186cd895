package testproc

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

func TestWaitBoundOwnSockets(t *testing.T) {
	u, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	never := make(chan struct{})
	if err := WaitBound(os.Getpid(), "udp", u.LocalAddr().(*net.UDPAddr).Port, never, 2*time.Second); err != nil {
		t.Fatalf("udp: %v", err)
	}
	if err := WaitBound(os.Getpid(), "tcp", l.Addr().(*net.TCPAddr).Port, never, 2*time.Second); err != nil {
		t.Fatalf("tcp: %v", err)
	}
}

func TestWaitBoundNotBound(t *testing.T) {
	u, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	port := u.LocalAddr().(*net.UDPAddr).Port
	// UDP bound, but no TCP listener on that port: never ready.
	never := make(chan struct{})
	if err := WaitBound(os.Getpid(), "tcp", port, never, 100*time.Millisecond); err == nil {
		t.Fatal("a TCP port nobody listens on was reported bound")
	}
	exited := make(chan struct{})
	close(exited)
	if err := WaitBound(os.Getpid(), "tcp", port, exited, time.Second); !errors.Is(err, ErrExited) {
		t.Fatalf("got %v, want ErrExited", err)
	}
}

func TestFreePortBoth(t *testing.T) {
	p, err := FreePortBoth()
	if err != nil || p == 0 {
		t.Fatalf("FreePortBoth = %d, %v", p, err)
	}
}
