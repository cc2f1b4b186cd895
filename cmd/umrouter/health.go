package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

const healthUsage = `usage: umrouter health [--config FILE | --admin URL] [--ready] [--timeout DURATION]

Asks a running umrouter whether it is alive (GET /healthz) or, with --ready,
ready to take calls (GET /readyz): exit 0 when it answers 200, 1 otherwise,
with the reason on stderr. Meant for Docker's HEALTHCHECK and other probes
that run a command: the image has no curl.

The admin address comes from --admin, else from admin.listen in --config
(a wildcard address is reached on loopback), else http://127.0.0.1:9090.
No credentials are sent (the health endpoints need none), so the node's
certificate is not verified either.
`

func cmdHealth(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f adminFlags
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	fs.StringVar(&f.admin, "admin", "", "admin API base `URL`")
	fs.StringVar(&f.config, "config", "", "configuration `FILE` whose admin.listen to probe")
	fs.DurationVar(&f.timeout, "timeout", 3*time.Second, "give up after this `DURATION`")
	ready := fs.Bool("ready", false, "probe /readyz (ready to take calls) instead of /healthz (alive)")
	fs.Usage = func() { fmt.Fprint(stderr, healthUsage) }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	c, err := newAdminClient(f, true)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "umrouter health: %s\n", ue)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "umrouter health: %v\n", err)
		return 1
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		fmt.Fprintf(stderr, "umrouter health: %v\n", err)
		return 1
	}
	resp, err := c.http.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "umrouter health: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	text := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "umrouter health: %s%s: %s: %s\n", c.base, path, resp.Status, text)
		return 1
	}
	fmt.Fprintln(stdout, text)
	return 0
}
