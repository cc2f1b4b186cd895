package main

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/umrouter/umrouter/tlsmgr"
)

// certPasswordEnv names the environment variable `cert import` reads a
// PKCS#12 password from when --password-file is not given.
const certPasswordEnv = "UMROUTER_CERT_PASSWORD"

const certUsage = `usage: umrouter cert COMMAND [ARGUMENTS] [--state-dir DIR | --config FILE]

Manages the certificate store (tls.state_dir). A running umrouter watches the
store: after "cert enable" new connections use the enabled certificate within
a second, without a restart; established connections keep theirs.

commands:
  new --self-signed --dns NAME [--dns NAME]... [--ip ADDR]... [--key TYPE] [--days N]
        create a self-signed certificate and its key (not enabled)
  request --dns NAME [--dns NAME]... [--ip ADDR]... [--subject "CN=...,O=...,C=.."] [--key TYPE] --out FILE.csr
        create a key, kept in the store as a pending request, and a certificate
        signing request (PEM) for your CA; import the signed certificate to complete it
  import FILE [--password-file FILE]
        add a certificate: PEM (certificate, chain and key), PKCS#12 .pfx/.p12 (password
        from --password-file or $` + certPasswordEnv + `), or a signed certificate (PEM or
        DER) that completes a pending request; validated first, not enabled
  list [--json]
        certificates (thumbprint, subject, SANs, issuer, validity, self-signed, active,
        key type) and pending requests
  enable THUMBPRINT
        validate a certificate and make it the active one
  export THUMBPRINT --out FILE [--der]
        write the public certificate and its chain (PEM), or with --der the certificate
        alone, for the trust stores of gateways, PBXs and SBCs
  remove THUMBPRINT
        delete a certificate and its key (never the active one), or a pending request

  TYPE is ecdsa-p256 (default), rsa-2048 or rsa-3072. THUMBPRINT is the SHA-256 of the
  certificate as "cert list" prints it (64 hex digits; colons and upper case accepted).

store (every command):
  --state-dir DIR   the certificate store directory
  --config FILE     the configuration file whose tls.state_dir names the store
  neither, or a configuration without tls.state_dir: the store "umrouter run" uses
  by default ($STATE_DIRECTORY, else /var/lib/umrouter when writable, else
  $XDG_STATE_HOME/umrouter or ~/.local/state/umrouter), named on stderr

exit codes: 0 success, 1 failure, 2 usage error
`

// runCert runs `umrouter cert ARGS...` and returns the exit code.
func runCert(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, certUsage)
		return 2
	}
	cmds := map[string]func(*certCommand) int{
		"new":     (*certCommand).new,
		"request": (*certCommand).request,
		"import":  (*certCommand).importFile,
		"list":    (*certCommand).list,
		"enable":  (*certCommand).enable,
		"export":  (*certCommand).export,
		"remove":  (*certCommand).remove,
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, certUsage)
		return 0
	}
	run, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "umrouter cert: unknown command %q\n\n%s", args[0], certUsage)
		return 2
	}
	c := &certCommand{name: args[0], args: args[1:], stdout: stdout, stderr: stderr}
	c.fs = flag.NewFlagSet("cert "+c.name, flag.ContinueOnError)
	c.fs.SetOutput(stderr)
	c.fs.Usage = func() { fmt.Fprint(stderr, certUsage) }
	c.fs.StringVar(&c.stateDir, "state-dir", "", "certificate store `DIR`")
	c.fs.StringVar(&c.config, "config", "", "configuration `FILE` whose tls.state_dir names the store")
	return run(c)
}

// certCommand is one `cert` subcommand being run.
type certCommand struct {
	name           string
	args           []string
	fs             *flag.FlagSet
	stateDir       string
	config         string
	stdout, stderr io.Writer
}

// parse parses the subcommand's flags, which may come before, between or
// after its positional arguments ("import FILE --state-dir DIR"), and
// checks that there is exactly one positional argument when arg names it
// ("THUMBPRINT", "FILE"), none otherwise. It returns the exit code to stop
// with, or -1 to go on.
func (c *certCommand) parse(arg string) ([]string, int) {
	var pos []string
	args := c.args
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0
			}
			return nil, 2
		}
		if c.fs.NArg() == 0 {
			break
		}
		pos = append(pos, c.fs.Arg(0))
		args = c.fs.Args()[1:] // shorter at every turn
	}
	switch {
	case arg == "" && len(pos) > 0:
		return nil, c.usageError("unexpected argument %q", pos[0])
	case arg != "" && len(pos) == 0:
		return nil, c.usageError("give the %s", arg)
	case arg != "" && len(pos) > 1:
		return nil, c.usageError("one %s only; unexpected %q", arg, pos[1])
	}
	if c.stateDir != "" && c.config != "" {
		return nil, c.usageError("give --state-dir or --config, not both")
	}
	return pos, -1
}

func (c *certCommand) usageError(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "umrouter cert %s: %s\n(umrouter cert --help for usage)\n", c.name, fmt.Sprintf(format, a...))
	return 2
}

func (c *certCommand) fail(err error) int {
	fmt.Fprintf(c.stderr, "umrouter cert %s: %v\n", c.name, err)
	return 1
}

// store opens the store named by --state-dir or by the configuration, or
// else the daemon's default one, which it names on stderr: an
// administrator without $STATE_DIRECTORY or write access to /var/lib may
// otherwise be looking at a store of their own. Only the commands that add
// to a store (create) make its directory.
func (c *certCommand) store(create bool) (*tlsmgr.Store, error) {
	dir := c.stateDir
	if dir == "" && c.config != "" {
		var err error
		if dir, err = stateDirOfConfig(c.config); err != nil {
			return nil, err
		}
	}
	if dir == "" {
		dir = defaultStateDir(os.Getenv)
		fmt.Fprintf(c.stderr, "umrouter cert: using the default certificate store %s (choose with --state-dir DIR or --config FILE)\n", dir)
	}
	if !create {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("no certificate store at %s: %w", dir, err)
		}
	}
	return tlsmgr.OpenStore(dir)
}

// stateDirOfConfig reads tls.state_dir from a configuration file: "" when
// it is not set, which means the default store, as for the daemon. Only
// that much is read: certificates can be managed while other sections of
// the file are still being written (`umrouter config check` validates it
// all).
func stateDirOfConfig(file string) (string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	var doc struct {
		TLS struct {
			StateDir string `yaml:"state_dir"`
			CertFile string `yaml:"cert_file"`
		} `yaml:"tls"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	if doc.TLS.StateDir == "" && doc.TLS.CertFile != "" {
		return "", fmt.Errorf("%s: tls.cert_file is set, so umrouter does not use a certificate store: replace the files at tls.cert_file and tls.key_file instead (the daemon reloads them)", file)
	}
	return doc.TLS.StateDir, nil
}

// listFlag collects a repeated flag; commas separate values too.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// nameFlags adds --dns, --ip and --key to the subcommand.
func (c *certCommand) nameFlags() (dns, ips *listFlag, key *string) {
	dns, ips = new(listFlag), new(listFlag)
	c.fs.Var(dns, "dns", "DNS `NAME` for the subject alternative names (repeat for more)")
	c.fs.Var(ips, "ip", "IP `ADDRESS` for the subject alternative names (repeat for more)")
	key = c.fs.String("key", string(tlsmgr.KeyECDSAP256), "key `TYPE`: ecdsa-p256, rsa-2048 or rsa-3072")
	return dns, ips, key
}

func names(dns, ips listFlag) (tlsmgr.Names, error) {
	n := tlsmgr.Names{DNSNames: dns}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return n, fmt.Errorf("--ip %q is not an IP address", s)
		}
		n.IPAddresses = append(n.IPAddresses, ip)
	}
	return n, nil
}

func (c *certCommand) new() int {
	selfSigned := c.fs.Bool("self-signed", false, "create a self-signed certificate (required: the only kind `new` makes)")
	dns, ips, key := c.nameFlags()
	days := c.fs.Int("days", 365, "validity in `DAYS` (1 to 3650)")
	if _, code := c.parse(""); code >= 0 {
		return code
	}
	if !*selfSigned {
		return c.usageError("give --self-signed: `cert new` makes self-signed certificates only (for a CA-issued certificate use `cert request`)")
	}
	if len(*dns) == 0 && len(*ips) == 0 {
		return c.usageError("give at least one --dns NAME (or --ip ADDRESS)")
	}
	n, err := names(*dns, *ips)
	if err != nil {
		return c.usageError("%v", err)
	}
	if *days < 1 {
		return c.usageError("--days must be at least 1")
	}
	st, err := c.store(true)
	if err != nil {
		return c.fail(err)
	}
	info, err := st.NewSelfSigned(tlsmgr.SelfSignedOptions{Names: n, Key: tlsmgr.KeyType(*key), Days: *days})
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "created a self-signed certificate in %s\n", st.Dir())
	printCert(c.stdout, info)
	c.hintEnable(info)
	return 0
}

func (c *certCommand) hintEnable(info tlsmgr.CertInfo) {
	if !info.Active {
		fmt.Fprintf(c.stdout, "\nto use it: umrouter cert enable %s%s\n", info.Thumbprint, c.storeArgs())
	}
}

// storeArgs repeats the store flags for a hint the user can paste.
func (c *certCommand) storeArgs() string {
	switch {
	case c.config != "":
		return " --config " + shellQuote(c.config)
	case c.stateDir != "":
		return " --state-dir " + shellQuote(c.stateDir)
	}
	return ""
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`*?[]{}()<>|&;#~!") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (c *certCommand) request() int {
	dns, ips, key := c.nameFlags()
	subject := c.fs.String("subject", "", "requested subject `DN`, e.g. \"CN=um.example.com,O=Contoso,C=US\" (default CN=first name)")
	out := c.fs.String("out", "", "`FILE` to write the certificate signing request (PEM) to")
	if _, code := c.parse(""); code >= 0 {
		return code
	}
	if *out == "" {
		return c.usageError("give --out FILE.csr")
	}
	if len(*dns) == 0 && len(*ips) == 0 {
		return c.usageError("give at least one --dns NAME (or --ip ADDRESS)")
	}
	n, err := names(*dns, *ips)
	if err != nil {
		return c.usageError("%v", err)
	}
	if _, err := tlsmgr.ParseSubject(*subject); err != nil {
		return c.usageError("--subject: %v", err)
	}
	st, err := c.store(true)
	if err != nil {
		return c.fail(err)
	}
	// Open the output first, so that an unwritable path leaves no
	// orphaned pending key behind.
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return c.fail(err)
	}
	req, csr, err := st.NewRequest(tlsmgr.RequestOptions{Names: n, Subject: *subject, Key: tlsmgr.KeyType(*key)})
	if err == nil {
		_, err = f.Write(csr)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(*out)
		if req.ID != "" {
			_ = st.Remove(req.ID)
		}
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "wrote certificate request %s\n", *out)
	printRequest(c.stdout, req)
	fmt.Fprintf(c.stdout, "\nthe key stays in %s; have your CA sign the request, then:\n  umrouter cert import SIGNED.crt%s\n", st.Dir(), c.storeArgs())
	return 0
}

func (c *certCommand) importFile() int {
	passwordFile := c.fs.String("password-file", "", "`FILE` holding the PKCS#12 password (default: $"+certPasswordEnv+", else none)")
	pos, code := c.parse("FILE")
	if code >= 0 {
		return code
	}
	data, err := os.ReadFile(pos[0])
	if err != nil {
		return c.fail(err)
	}
	password := os.Getenv(certPasswordEnv)
	if *passwordFile != "" {
		b, err := os.ReadFile(*passwordFile)
		if err != nil {
			return c.fail(err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	st, err := c.store(true)
	if err != nil {
		return c.fail(err)
	}
	imp, err := st.Import(data, password)
	if errors.Is(err, tlsmgr.ErrWrongPassword) {
		return c.fail(fmt.Errorf("%s: %w (give it with --password-file FILE or $%s)", pos[0], err, certPasswordEnv))
	}
	if err != nil {
		return c.fail(fmt.Errorf("%s refused: %w", pos[0], err))
	}
	fmt.Fprintf(c.stdout, "imported %s into %s\n", pos[0], st.Dir())
	if imp.Request != "" {
		fmt.Fprintf(c.stdout, "it completes pending request %s\n", imp.Request)
	}
	printCert(c.stdout, imp.CertInfo)
	c.hintEnable(imp.CertInfo)
	return 0
}

func (c *certCommand) list() int {
	asJSON := c.fs.Bool("json", false, "print JSON")
	if _, code := c.parse(""); code >= 0 {
		return code
	}
	st, err := c.store(false)
	if err != nil {
		return c.fail(err)
	}
	certs, err := st.List()
	if err != nil {
		return c.fail(err)
	}
	reqs, err := st.Requests()
	if err != nil {
		return c.fail(err)
	}
	if *asJSON {
		if certs == nil {
			certs = []tlsmgr.CertInfo{}
		}
		if reqs == nil {
			reqs = []tlsmgr.Request{}
		}
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			StateDir        string            `json:"state_dir"`
			Certificates    []tlsmgr.CertInfo `json:"certificates"`
			PendingRequests []tlsmgr.Request  `json:"pending_requests"`
		}{st.Dir(), certs, reqs}); err != nil {
			return c.fail(err)
		}
		return 0
	}
	if len(certs) == 0 {
		fmt.Fprintf(c.stdout, "no certificates in %s (the daemon creates a self-signed one on first start)\n", st.Dir())
	}
	for i, info := range certs {
		if i > 0 {
			fmt.Fprintln(c.stdout)
		}
		printCert(c.stdout, info)
	}
	for _, r := range reqs {
		fmt.Fprintln(c.stdout)
		printRequest(c.stdout, r)
	}
	return 0
}

func (c *certCommand) enable() int {
	pos, code := c.parse("THUMBPRINT")
	if code >= 0 {
		return code
	}
	st, err := c.store(false)
	if err != nil {
		return c.fail(err)
	}
	info, err := st.Enable(pos[0])
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "enabled %s (%s)\n", info.Thumbprint, info.Subject)
	fmt.Fprintf(c.stdout, "a running umrouter using %s presents it on new connections within a second; established connections keep their certificate\n", st.Dir())
	return 0
}

func (c *certCommand) export() int {
	out := c.fs.String("out", "", "`FILE` to write")
	der := c.fs.Bool("der", false, "write the certificate alone in DER (.cer) instead of PEM with its chain")
	pos, code := c.parse("THUMBPRINT")
	if code >= 0 {
		return code
	}
	if *out == "" {
		return c.usageError("give --out FILE")
	}
	st, err := c.store(false)
	if err != nil {
		return c.fail(err)
	}
	chain, err := st.Export(pos[0])
	if err != nil {
		return c.fail(err)
	}
	var data []byte
	if *der {
		data = chain[0].Raw
	} else {
		for _, cert := range chain {
			data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
		}
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		return c.fail(err)
	}
	switch {
	case !*der:
		fmt.Fprintf(c.stdout, "wrote the certificate and %d CA certificate(s) to %s (PEM)\n", len(chain)-1, *out)
	case len(chain) > 1:
		fmt.Fprintf(c.stdout, "wrote the certificate to %s (DER); DER holds one certificate: export PEM to include its %d CA certificate(s)\n", *out, len(chain)-1)
	default:
		fmt.Fprintf(c.stdout, "wrote the certificate to %s (DER)\n", *out)
	}
	return 0
}

func (c *certCommand) remove() int {
	pos, code := c.parse("THUMBPRINT")
	if code >= 0 {
		return code
	}
	st, err := c.store(false)
	if err != nil {
		return c.fail(err)
	}
	if err := st.Remove(pos[0]); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "removed %s from %s\n", pos[0], st.Dir())
	return 0
}

func printCert(w io.Writer, c tlsmgr.CertInfo) {
	fmt.Fprintf(w, "thumbprint %s\n", c.Thumbprint)
	field := func(k, v string) { fmt.Fprintf(w, "  %-12s %s\n", k, v) }
	if c.Subject != "" || c.Problem == "" {
		field("subject", c.Subject)
		field("SANs", strings.Join(c.SANs(), ", "))
		field("issuer", c.Issuer)
		field("not before", c.NotBefore.Format("2006-01-02 15:04:05Z07:00"))
		field("not after", c.NotAfter.Format("2006-01-02 15:04:05Z07:00"))
		field("self-signed", yesNo(c.SelfSigned))
		field("key type", c.KeyType)
		field("chain", fmt.Sprintf("%d CA certificate(s)", c.Chain))
	}
	field("active", yesNo(c.Active))
	if c.Problem != "" {
		field("PROBLEM", c.Problem)
	}
}

func printRequest(w io.Writer, r tlsmgr.Request) {
	fmt.Fprintf(w, "pending request %s\n", r.ID)
	sans := make([]string, 0, len(r.DNSNames)+len(r.IPAddresses))
	for _, d := range r.DNSNames {
		sans = append(sans, "DNS:"+d)
	}
	for _, ip := range r.IPAddresses {
		sans = append(sans, "IP:"+ip)
	}
	fmt.Fprintf(w, "  %-12s %s\n", "subject", r.Subject)
	fmt.Fprintf(w, "  %-12s %s\n", "SANs", strings.Join(sans, ", "))
	fmt.Fprintf(w, "  %-12s %s\n", "key type", r.KeyType)
	fmt.Fprintf(w, "  %-12s %s\n", "created", r.Created.Format("2006-01-02 15:04:05Z07:00"))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
