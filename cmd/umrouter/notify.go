package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// notifier tells systemd about the daemon's state through the sd_notify
// protocol: one datagram of newline-separated KEY=VALUE assignments to the
// unix socket named by $NOTIFY_SOCKET (a leading '@' names Linux's abstract
// namespace). Without $NOTIFY_SOCKET, as under Type=simple, in a container
// or in a terminal, every method does nothing.
//
// The protocol is small enough that a dependency would add more than it
// saves: see sd_notify(3) and systemd.service(5), Type=notify.
type notifier struct {
	addr *net.UnixAddr // nil: not started by systemd with Type=notify
	// watchdog is the interval at which WATCHDOG=1 must be sent: half of
	// $WATCHDOG_USEC, 0 when the unit sets no WatchdogSec= (or the
	// watchdog is meant for another process, $WATCHDOG_PID).
	watchdog time.Duration
}

// newNotifier reads the environment systemd sets for the main process.
func newNotifier(env func(string) string) (*notifier, error) {
	n := &notifier{}
	name := env("NOTIFY_SOCKET")
	if name == "" {
		return n, nil
	}
	if name[0] != '/' && name[0] != '@' {
		// systemd 254+ may also pass vsock:CID:PORT for virtual machines;
		// a daemon on a host or in a container never sees it.
		return n, fmt.Errorf("NOTIFY_SOCKET=%q: only unix socket paths and @abstract names are supported", name)
	}
	// Go's net package maps a leading '@' to the abstract namespace
	// (a name starting with a NUL byte) by itself.
	n.addr = &net.UnixAddr{Name: name, Net: "unixgram"}

	if usec := env("WATCHDOG_USEC"); usec != "" {
		if pid := env("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
			return n, nil // meant for another process of the unit
		}
		v, err := strconv.ParseUint(usec, 10, 63)
		if err != nil || v == 0 {
			return n, fmt.Errorf("WATCHDOG_USEC=%q: not a positive number of microseconds", usec)
		}
		n.watchdog = time.Duration(v) * time.Microsecond / 2
	}
	return n, nil
}

// enabled reports whether systemd listens.
func (n *notifier) enabled() bool { return n.addr != nil }

// send writes one notification. systemd reads the socket asynchronously;
// a datagram socket of the right kind never blocks for long, but a dead
// reader must not hold the daemon, hence the deadline.
func (n *notifier) send(lines ...string) error {
	if n.addr == nil {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.addr.Name, err)
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.addr.Name, err)
	}
	return nil
}

// ready says that the listeners are up: systemd considers the start
// complete (and `systemctl start` returns) only then.
func (n *notifier) ready(status string) error {
	return n.send("READY=1", "STATUS="+status)
}

// reloading says that a reload began. MONOTONIC_USEC is the time of the
// request on CLOCK_MONOTONIC, which systemd 253+ requires to tell this
// reload from an earlier one (Type=notify-reload); older versions ignore it.
// READY=1 ends the reload.
func (n *notifier) reloading() error {
	usec, err := monotonicUsec()
	if err != nil {
		return n.send("RELOADING=1", "STATUS=reloading")
	}
	return n.send("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatUint(usec, 10), "STATUS=reloading")
}

// stopping says that a graceful stop began (in-flight calls drain).
func (n *notifier) stopping(status string) error {
	return n.send("STOPPING=1", "STATUS="+status)
}

// status updates the one-line status `systemctl status` shows.
func (n *notifier) status(s string) error { return n.send("STATUS=" + s) }

// ping feeds the watchdog.
func (n *notifier) ping() error { return n.send("WATCHDOG=1") }

func monotonicUsec() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, err
	}
	if ts.Sec < 0 {
		return 0, errors.New("CLOCK_MONOTONIC before its epoch")
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3, nil
}
