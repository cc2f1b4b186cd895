package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/umrouter/umrouter/tlsmgr"
)

const ctlUsage = `usage: umrouter ctl COMMAND [flags]

Drives a running umrouter through its admin API, on this host or another.

commands:
  status                       node, certificates, gateways, backends, counts
  reload                       what SIGHUP does: re-read the configuration, reload certificates
  drain                        refuse new calls (503), let established calls end; readiness turns false
  undrain                      take new calls again after a drain (not during a shutdown)
  backend ADDRESS STATE        set a backend server's state: enabled, disabled or no-new-calls

where the admin API is, and how to prove who you are:
  --admin URL                  e.g. https://um-edge-1.example.com:9090 (default http://127.0.0.1:9090)
  --config FILE                or read admin.listen and admin.token_file from this node's configuration
  --token-file FILE            bearer token (admin.token_file on the node)
  --cert FILE --key FILE       client certificate issued by the node's admin.client_ca_file
  --ca FILE                    CA bundle that verifies the node's certificate (default: system roots;
                               with --config on this host: the node's own certificate)
  --server-name NAME           name to verify in the node's certificate (default: the URL's host)
  --timeout DURATION           give up after this long (default 30s)
  --json                       status: print the JSON document as the API returns it

exit status: 0 done, 1 refused or unreachable (the reason is printed), 2 usage error
`

// adminFlags locate the admin API and carry the caller's credentials; ctl
// and health share them.
type adminFlags struct {
	admin, config, tokenFile  string
	cert, key, ca, serverName string
	timeout                   time.Duration
}

func (f *adminFlags) register(fs *flag.FlagSet, timeout time.Duration) {
	fs.StringVar(&f.admin, "admin", "", "admin API base `URL`")
	fs.StringVar(&f.config, "config", "", "node configuration `FILE` to read the admin address (and token file) from")
	fs.StringVar(&f.tokenFile, "token-file", "", "bearer token `FILE`")
	fs.StringVar(&f.cert, "cert", "", "client certificate `FILE` (PEM)")
	fs.StringVar(&f.key, "key", "", "client key `FILE` (PEM)")
	fs.StringVar(&f.ca, "ca", "", "CA bundle `FILE` that verifies the node's certificate")
	fs.StringVar(&f.serverName, "server-name", "", "`NAME` to verify in the node's certificate")
	fs.DurationVar(&f.timeout, "timeout", timeout, "give up after this `DURATION`")
}

// adminClient is an HTTP client bound to one node's admin API.
type adminClient struct {
	base  string // scheme://host:port, no trailing slash
	token string
	http  *http.Client
}

// newAdminClient resolves the flags into a client. With insecure, the
// node's certificate is not verified: health uses it, which sends no
// credentials and reads a single word.
func newAdminClient(f adminFlags, insecure bool) (*adminClient, error) {
	if f.admin != "" && f.config != "" {
		return nil, errUsage("give --admin or --config, not both")
	}
	if (f.cert == "") != (f.key == "") {
		return nil, errUsage("--cert and --key go together")
	}
	c := &adminClient{base: "http://127.0.0.1:9090"}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.serverName}
	var pinned []*x509.Certificate // with --config on this host: the node's own certificate
	switch {
	case f.admin != "":
		u, err := url.Parse(f.admin)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errUsage(fmt.Sprintf("--admin %q: want http://HOST:PORT or https://HOST:PORT", f.admin))
		}
		c.base = strings.TrimSuffix(u.Scheme+"://"+u.Host+u.Path, "/")
	case f.config != "":
		data, err := os.ReadFile(f.config)
		if err != nil {
			return nil, err
		}
		doc, problems := loadConfig(data, os.Getenv)
		if len(problems) > 0 {
			return nil, fmt.Errorf("%s: %s", f.config, problems[0].format(f.config))
		}
		if doc.Admin.Listen == "" {
			return nil, fmt.Errorf("%s: admin.listen is empty: the admin API is disabled on that node", f.config)
		}
		c.base = localURL(doc.Admin.Listen, doc.Admin.TLS())
		if f.tokenFile == "" && !insecure {
			f.tokenFile = doc.Admin.TokenFile
		}
		if doc.Admin.TLS() && f.ca == "" && !insecure {
			if pinned, err = nodeCertificate(doc); err != nil {
				return nil, fmt.Errorf("cannot read the node's certificate to verify the admin API (give --ca): %w", err)
			}
		}
	}
	if f.tokenFile != "" {
		data, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, err
		}
		if c.token = strings.TrimSpace(string(data)); c.token == "" {
			return nil, fmt.Errorf("%s: empty token", f.tokenFile)
		}
	}
	if f.cert != "" {
		pair, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{pair}
	}
	switch {
	case insecure:
		tlsCfg.InsecureSkipVerify = true
	case f.ca != "":
		data, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", f.ca)
		}
		tlsCfg.RootCAs = pool
	case pinned != nil:
		// We reach our own node on a loopback address its certificate
		// does not name: trust exactly that certificate, nothing else.
		tlsCfg.InsecureSkipVerify = true
		tlsCfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 && bytes.Equal(cs.PeerCertificates[0].Raw, pinned[0].Raw) {
				return nil
			}
			return errors.New("the admin API presented a certificate other than the node's own (replaced meanwhile? try again, or give --ca)")
		}
	}
	if c.token != "" && strings.HasPrefix(c.base, "http://") && !loopbackURL(c.base) {
		return nil, fmt.Errorf("refusing to send the token in clear to %s: use https://", c.base)
	}
	c.http = &http.Client{
		Timeout:   f.timeout,
		Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("the admin API does not redirect")
		},
	}
	return c, nil
}

// localURL is the URL at which this host reaches an admin server bound to
// listen: a wildcard address is reached on loopback.
func localURL(listen string, useTLS bool) string {
	host, port, _ := net.SplitHostPort(listen)
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if err == nil && ip.Is6() {
			host = "::1"
		}
	}
	scheme := "http"
	if useTLS {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

func loopbackURL(base string) bool {
	u, err := url.Parse(base)
	if err != nil {
		return false
	}
	h := u.Hostname()
	ip, err := netip.ParseAddr(h)
	return strings.EqualFold(h, "localhost") || (err == nil && ip.IsLoopback())
}

// nodeCertificate reads the certificate the node of doc presents: its
// tls.cert_file, or the active certificate of its store.
func nodeCertificate(doc *document) ([]*x509.Certificate, error) {
	if doc.TLS.CertFile != "" {
		data, err := os.ReadFile(doc.TLS.CertFile)
		if err != nil {
			return nil, err
		}
		var certs []*x509.Certificate
		for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
			if block.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", doc.TLS.CertFile, err)
			}
			certs = append(certs, c)
		}
		if len(certs) == 0 {
			return nil, fmt.Errorf("%s: no certificate", doc.TLS.CertFile)
		}
		return certs, nil
	}
	store, err := tlsmgr.OpenStore(doc.TLS.StateDir)
	if err != nil {
		return nil, err
	}
	thumb, err := store.Active()
	if err != nil {
		return nil, err
	}
	if thumb == "" {
		return nil, fmt.Errorf("%s: no active certificate", doc.TLS.StateDir)
	}
	return store.Export(thumb)
}

// call sends one request and decodes a JSON answer into out (when not nil).
// An answer of 400 or more becomes an error carrying the API's message,
// except for wantCodes, which are returned for the caller to judge.
func (c *adminClient) call(ctx context.Context, method, path string, out any, wantCodes ...int) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return 0, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	ok := resp.StatusCode < 400
	for _, w := range wantCodes {
		ok = ok || resp.StatusCode == w
	}
	if !ok {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, c.base+path, resp.Status, msg)
	}
	if out != nil {
		if raw, isRaw := out.(*json.RawMessage); isRaw {
			*raw = append((*raw)[:0], body...)
		} else if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: undecodable answer: %w", method, c.base+path, err)
		}
	}
	return resp.StatusCode, nil
}

type usageError string

func (e usageError) Error() string { return string(e) }

func errUsage(msg string) error { return usageError(msg) }

// parseInterleaved parses fs's flags wherever they stand among the
// positional arguments ("backend ADDR STATE --admin URL") and returns the
// positional ones; code is the exit code to stop with, or -1 to go on.
func parseInterleaved(fs *flag.FlagSet, args []string, stderr io.Writer) (pos []string, code int) {
	fs.SetOutput(stderr)
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0
			}
			return nil, 2
		}
		if fs.NArg() == 0 {
			return pos, -1
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:] // shorter at every turn
	}
}

func cmdCtl(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f adminFlags
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	f.register(fs, 30*time.Second)
	asJSON := fs.Bool("json", false, "status: print the JSON document")
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsage) }
	pos, code := parseInterleaved(fs, args, stderr)
	if code >= 0 {
		return code
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "umrouter ctl: %s\n(umrouter ctl --help for usage)\n", msg)
		return 2
	}
	if len(pos) == 0 {
		return usage("missing command: status, reload, drain, undrain or backend")
	}
	want := map[string]int{"status": 1, "reload": 1, "drain": 1, "undrain": 1, "backend": 3}
	n, known := want[pos[0]]
	switch {
	case !known:
		return usage(fmt.Sprintf("unknown command %q", pos[0]))
	case len(pos) != n && pos[0] == "backend":
		return usage("backend needs ADDRESS and STATE, e.g. backend um1.example.com:5061 no-new-calls")
	case len(pos) != n:
		return usage(fmt.Sprintf("%s takes no argument; unexpected %q", pos[0], pos[1]))
	}
	c, err := newAdminClient(f, false)
	var ue usageError
	if errors.As(err, &ue) {
		return usage(ue.Error())
	}
	if err != nil {
		fmt.Fprintf(stderr, "umrouter ctl: %v\n", err)
		return 1
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "umrouter ctl %s: %v\n", pos[0], err)
		return 1
	}
	switch pos[0] {
	case "status":
		if *asJSON {
			var raw json.RawMessage
			if _, err := c.call(ctx, "GET", "/status", &raw); err != nil {
				return fail(err)
			}
			_, _ = stdout.Write(raw)
			return 0
		}
		var st statusDoc
		if _, err := c.call(ctx, "GET", "/status", &st); err != nil {
			return fail(err)
		}
		printStatus(stdout, st)
		return 0
	case "reload":
		var res reloadResult
		code, err := c.call(ctx, "POST", "/reload", &res, http.StatusUnprocessableEntity)
		if err != nil {
			return fail(err)
		}
		printReload(stdout, res)
		if code != http.StatusOK {
			fmt.Fprintln(stderr, "umrouter ctl reload: refused; the node keeps running on what it had")
			return 1
		}
		return 0
	case "drain":
		var st statusDoc
		if _, err := c.call(ctx, "POST", "/drain", &st); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "%s: draining: new calls are refused with 503, %d established calls continue; readiness is false\n",
			st.Node, st.CallsActive)
		return 0
	case "undrain":
		var st statusDoc
		if _, err := c.call(ctx, "POST", "/undrain", &st); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "%s: taking new calls again; ready: %s\n", st.Node, yesNo(st.Ready))
		return 0
	default: // backend
		path := "/backends/" + url.PathEscape(pos[1]) + "/state?state=" + url.QueryEscape(pos[2])
		if _, err := c.call(ctx, "POST", path, nil); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "backend %s: %s\n", pos[1], pos[2])
		return 0
	}
}

func printStatus(w io.Writer, st statusDoc) {
	yesNo := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "node\t%s (umrouter %s, %s)\n", st.Node, st.Version, st.Config)
	fmt.Fprintf(tw, "ready\t%s\n", yesNo(st.Ready))
	fmt.Fprintf(tw, "draining\t%s\n", yesNo(st.Draining))
	fmt.Fprintf(tw, "connections\t%d\n", st.Connections)
	fmt.Fprintf(tw, "transactions\t%d\n", st.Transactions)
	fmt.Fprintf(tw, "calls\t%d\n", st.CallsActive)
	fmt.Fprintf(tw, "handshakes\t%d in progress (%d computing, %d waiting for a CPU)\n",
		st.Handshakes.InProgress, st.Handshakes.Computing, st.Handshakes.WaitingCPU)
	fmt.Fprintf(tw, "gateways\t%s\n", strings.Join(st.Gateways, ", "))
	for _, c := range st.Certificates {
		left := time.Until(c.NotAfter).Round(time.Hour)
		if c.Role == "server" {
			self := c.SelfSigned != nil && *c.SelfSigned
			fmt.Fprintf(tw, "certificate\t%s  %s  not after %s (%s left)  self-signed %s\n",
				c.Thumbprint, c.Subject, c.NotAfter.UTC().Format(time.RFC3339), left, yesNo(self))
			continue
		}
		fmt.Fprintf(tw, "%s\tearliest not after %s (%s left)\n", c.Role, c.NotAfter.UTC().Format(time.RFC3339), left)
	}
	_ = tw.Flush()
	for _, warn := range st.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tSTATE\tUP\tCALLS\tWEIGHT")
	for _, b := range st.Backends {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", b.Address, b.Admin, yesNo(b.Up), b.ActiveCalls, b.Weight)
	}
	_ = tw.Flush()
}

func printReload(w io.Writer, r reloadResult) {
	cfg := r.Config
	switch cfg.Result {
	case "applied":
		fmt.Fprintf(w, "configuration %s: applied (%s)\n", cfg.File, strings.Join(cfg.Sections, ", "))
		if len(cfg.RestartNeeded) > 0 {
			fmt.Fprintf(w, "  changed but applied only by a restart: %s\n", strings.Join(cfg.RestartNeeded, ", "))
		}
	case "refused":
		fmt.Fprintf(w, "configuration %s: refused, the running one stays in force\n", cfg.File)
		for _, p := range cfg.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	default:
		fmt.Fprintf(w, "configuration %s: %s\n", cfg.File, cfg.Result)
	}
	if r.Certificate.Result == "ok" {
		fmt.Fprintf(w, "certificate: ok (%s)\n", r.Certificate.Thumbprint)
	} else {
		fmt.Fprintf(w, "certificate: refused, %s stays in force: %s\n", r.Certificate.Thumbprint, r.Certificate.Error)
	}
	if r.Admin != nil {
		if r.Admin.Result == "ok" {
			fmt.Fprintln(w, "admin credentials: ok")
		} else {
			fmt.Fprintf(w, "admin credentials: refused, the current ones stay in force: %s\n", r.Admin.Error)
		}
	}
}
