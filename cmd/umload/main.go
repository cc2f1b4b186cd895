// Command umload is a SIP load generator for umrouter, and for any SIP
// server that takes calls from gateways over mutual TLS: operators use it
// to test their own deployment, the bench (bench/run.sh) to compare
// umrouter with Kamailio.
//
//	umload calls      full calls over C persistent mutual-TLS connections
//	umload handshake  one new mutual-TLS connection per OPTIONS
//	umload idle       open and hold K mutual-TLS connections
//	umload uas        a UDP backend (UAS) to put behind the proxy
//
// Every run is bounded by a count and a duration, whichever comes first,
// and ends by itself. It prints a table, then one JSON line with every
// figure (the last line of stdout); a progress line goes to stderr when
// stderr is a terminal. With -pids, the server's CPU time and memory are
// read from /proc (its processes and their descendants), so figures such
// as CPU per call come from the run itself.
//
// Exit status: 0 when every call or connection succeeded, 1 when some
// failed or the run could not start, 2 on a usage error.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: umload MODE [flags]

modes:
  calls      full calls (INVITE/100/180/200/ACK/BYE/200) over persistent mutual-TLS connections
  handshake  a new mutual-TLS connection per OPTIONS (handshake cost, session resumption)
  idle       open and hold K mutual-TLS connections (memory per connection)
  uas        a UDP user agent server to use as the proxy's backend

'umload MODE -h' lists the flags of a mode.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "calls":
		return cmdCalls(args[1:], stdout, stderr)
	case "handshake":
		return cmdHandshake(args[1:], stdout, stderr)
	case "idle":
		return cmdIdle(args[1:], stdout, stderr)
	case "uas":
		return cmdUAS(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "umload: unknown mode %q\n\n%s", args[0], usage)
	return 2
}

// splitHost splits host:port, tolerating a missing port.
func splitHost(hostport string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(hostport)
	if err != nil {
		return hostport, "", err
	}
	return host, port, nil
}
