package proxy

import (
	"context"
	"errors"
	"net"
	"runtime"
	"testing"
	"time"
)

// gatedPair is a gated connection over a pipe and the peer's end.
func gatedPair(t *testing.T, g *handshakeGate, ctx context.Context) (*gatedConn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return g.wrap(ctx, a), b
}

// readAsync reads one byte from c on another goroutine; the channel gets
// the error when the read returns.
func readAsync(c net.Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	return done
}

func send(t *testing.T, peer net.Conn) {
	t.Helper()
	go func() { _, _ = peer.Write([]byte{1}) }()
}

// With one slot, a second handshake whose peer's bytes have arrived does
// not compute until the first one gives its slot back, by waiting for its
// own peer or by finishing.
func TestHandshakeGateLetsOneComputeAtATime(t *testing.T) {
	g := newHandshakeGate(1)
	first, firstPeer := gatedPair(t, g, context.Background())
	second, secondPeer := gatedPair(t, g, context.Background())

	send(t, firstPeer)
	if err := <-readAsync(first); err != nil {
		t.Fatalf("first handshake's read: %v", err)
	}
	// first now computes on the only slot.
	send(t, secondPeer)
	blocked := readAsync(second)
	select {
	case err := <-blocked:
		t.Fatalf("second handshake got its bytes (%v) while the first held the only slot", err)
	case <-time.After(200 * time.Millisecond):
	}
	if g.computing() != 1 || g.waiting.Load() != 1 {
		t.Fatalf("one computing and one waiting for the slot: computing %d, waiting %d", g.computing(), g.waiting.Load())
	}
	// first waits for its peer again: it gives the slot up meanwhile.
	firstWaits := readAsync(first)
	select {
	case err := <-blocked:
		if err != nil {
			t.Fatalf("second handshake's read: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second handshake still waits while the first one waits for its peer")
	}
	// first's peer answers: first waits for the slot second now holds,
	// until second finishes.
	send(t, firstPeer)
	select {
	case err := <-firstWaits:
		t.Fatalf("first handshake computed (%v) while the second held the only slot", err)
	case <-time.After(200 * time.Millisecond):
	}
	second.finish()
	select {
	case err := <-firstWaits:
		if n := g.waiting.Load(); n != 0 {
			t.Fatalf("%d handshakes counted as waiting once both have a slot in turn", n)
		}
		if err != nil {
			t.Fatalf("first handshake's read: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first handshake still waits after the second finished")
	}
	first.finish()
	if len(g.slots) != 0 {
		t.Fatalf("%d slots still taken after both finished", len(g.slots))
	}
	// After finish, reads pass through: the connection's reader is not gated.
	held, heldPeer := gatedPair(t, g, context.Background())
	send(t, heldPeer)
	if err := <-readAsync(held); err != nil { // takes the only slot
		t.Fatal(err)
	}
	send(t, secondPeer)
	select {
	case err := <-readAsync(second):
		if err != nil {
			t.Fatalf("read after finish: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a finished handshake's connection is still gated")
	}
	held.finish()
}

// A handshake that waits for a slot past its timeout fails with the
// timeout's error, which the server reports as reason "timeout".
func TestHandshakeGateWaitEndsWithTheHandshakeTimeout(t *testing.T) {
	g := newHandshakeGate(1)
	busy, busyPeer := gatedPair(t, g, context.Background())
	send(t, busyPeer)
	if err := <-readAsync(busy); err != nil {
		t.Fatal(err)
	}
	defer busy.finish()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	waiting, waitingPeer := gatedPair(t, g, ctx)
	send(t, waitingPeer)
	select {
	case err := <-readAsync(waiting):
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("read waiting for a slot past the timeout: %v, want %v", err, context.DeadlineExceeded)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a handshake waits for a slot past its timeout")
	}
}

func TestHandshakeGateSizeLeavesOneCPU(t *testing.T) {
	if n := cap(newHandshakeGate(3).slots); n != 3 {
		t.Fatalf("explicit size: %d slots, want 3", n)
	}
	want := max(1, runtime.GOMAXPROCS(0)-1)
	if n := cap(newHandshakeGate(0).slots); n != want {
		t.Fatalf("default size with GOMAXPROCS=%d: %d slots, want %d", runtime.GOMAXPROCS(0), n, want)
	}
}
