// Package testproc holds the process plumbing shared by the test harnesses
// that run third-party SIP peers (SIPp, Kamailio) as child processes: finding
// the binary (skip or fail), choosing free loopback ports, and waiting until a
// child process has bound its port, read from /proc/net rather than guessed
// with a sleep.
package testproc

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// LookPath returns the absolute path of the executable name. When it is
// missing the test is skipped with a clear message, unless the environment
// variable CI is "true": in CI a missing peer is a failure, never a skip.
// pkg names the Debian package that provides it, for the message.
func LookPath(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found in PATH (Debian package %s): %v", name, pkg, err)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; CI=true, so a missing binary is a failure", msg)
	}
	t.Skipf("%s; skipping (set CI=true to make this a failure)", msg)
	return ""
}

// FreePort returns a port on 127.0.0.1 that was free for network ("udp" or
// "tcp") a moment ago. Another process may take it before the caller binds
// it: callers retry with a new port when the bind fails.
func FreePort(network string) (int, error) {
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	case "tcp":
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	return 0, fmt.Errorf("testproc: unknown network %q", network)
}

// FreePortBoth returns a port on 127.0.0.1 free for UDP and TCP at once
// (SIP servers often bind both). It tries a bounded number of candidates.
func FreePortBoth() (int, error) {
	for range 20 {
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		u.Close()
		if err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, errors.New("testproc: no port free for both UDP and TCP after 20 tries")
}

// ErrExited is returned by WaitBound when the process ended before it bound
// the port.
var ErrExited = errors.New("process exited before binding its port")

// WaitBound waits until process pid or one of its descendants (a forking
// server hands sockets to children) owns a socket bound to 127.0.0.1:port
// (or the wildcard address) for network "udp" or "tcp" (TCP: in LISTEN
// state). It reads /proc/net/{udp,tcp} and matches the socket inode against
// /proc/<pid>/fd, so a port taken by some other process does not count. It
// returns ErrExited as soon as exited is closed, and an error at the
// deadline.
func WaitBound(pid int, network string, port int, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := bound(pid, network, port)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-exited:
			return ErrExited
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testproc: pid %d did not bind %s port %d within %v", pid, network, port, timeout)
		}
	}
}

func bound(pid int, network string, port int) (bool, error) {
	var file string
	switch network {
	case "udp":
		file = "/proc/net/udp"
	case "tcp":
		file = "/proc/net/tcp"
	default:
		return false, fmt.Errorf("testproc: unknown network %q", network)
	}
	inodes, err := socketInodes(file, port, network == "tcp")
	if err != nil || len(inodes) == 0 {
		return false, err
	}
	for _, p := range processTree(pid) {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		if err != nil {
			continue // gone, or not ours to read
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p, fd.Name()))
			if err != nil {
				continue
			}
			if ino, ok := strings.CutPrefix(link, "socket:["); ok {
				if inodes[strings.TrimSuffix(ino, "]")] {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

// processTree returns pid and all its descendants, read from /proc/*/stat.
func processTree(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []int{pid}
	}
	children := map[int][]int{}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], n)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out) && i < 10000; i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// socketInodes parses a /proc/net/{udp,tcp} table and returns the inodes of
// sockets bound to 127.0.0.1:port or 0.0.0.0:port (TCP: listening only).
func socketInodes(file string, port int, listenOnly bool) (map[string]bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	want1 := fmt.Sprintf("0100007F:%04X", port)
	want2 := fmt.Sprintf("00000000:%04X", port)
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		if fields[1] != want1 && fields[1] != want2 {
			continue
		}
		if listenOnly && fields[3] != "0A" {
			continue
		}
		out[fields[9]] = true
	}
	return out, sc.Err()
}

// Tail returns at most the last n bytes of the file at path, for test logs.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "(none)"
	}
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	if len(b) > n {
		b = append([]byte("..."), b[len(b)-n:]...)
	}
	return string(b)
}
