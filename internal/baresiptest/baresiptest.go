// Package baresiptest runs baresip (Debian package baresip / baresip-core)
// in Go tests as a real SIP user agent: a gateway that places calls over
// mutual TLS, presenting a client certificate, with the media encryption of
// each account (SDES-SRTP, DTLS-SRTP or none).
//
// baresip runs headless in the foreground as a child process of the test,
// with a configuration directory written into t.TempDir() (config and
// accounts), no audio device (the ausine module is the source, no player is
// loaded), no stdin user interface, and the -t guard so that it quits by
// itself even if the test process dies. It is driven through its ctrl_tcp
// module on a loopback port: commands are netstring-framed JSON
// ({"command":"dial","params":"sip:...","token":"..."}) and the same
// connection carries the user-agent events (CALL_RINGING,
// CALL_ESTABLISHED, CALL_CLOSED with the SIP status as param, CALL_MENC when
// SRTP is keyed, ...), which Baresip records in order and lets tests wait
// on with a deadline.
//
// It is stopped at t.Cleanup ("quit" over ctrl_tcp, then SIGTERM, then
// SIGKILL, each bounded); its output (baresip -v, plus the SIP trace with
// Options.SIPTrace) is copied to the test log when the test failed.
//
// Version notes (baresip 1.0.0 with libre 1.1.0, as packaged by Debian 12):
//
//   - sip_certificate is one PEM file holding the certificate chain and the
//     private key (libre loads it with SSL_CTX_use_certificate_chain_file
//     and SSL_CTX_use_PrivateKey_file on the same path); Start concatenates
//     Options.CertFile and Options.KeyFile into it. OpenSSL presents it to
//     any server that asks for a client certificate.
//   - sip_cafile is loaded into the TLS context, but libre 1.1.0's SIP TLS
//     client does not verify the server's certificate (neither chain nor
//     host name): a call to a server whose certificate that CA did not
//     issue still goes out. Do not use baresip 1.0 to test server
//     authentication.
//   - The URI parameters of an account's address (e.g. ;transport=tls) are
//     appended to every dialled URI, so accounts here carry none and the
//     dialled URI says ;transport=tls itself.
//   - Config values end at the first blank: file paths are copied into the
//     configuration directory (t.TempDir() names hold no blanks).
//   - net_interface must be the address 127.0.0.1: the interface name "lo"
//     fails in some containers ("could not get IPv4 address").
//   - Commands such as dial, hangup and uafind come from the menu module,
//     which must be loaded (as module_app) for ctrl_tcp to find them.
//   - baresip hangs an answered call up at once when its audio cannot
//     start ("call: secure: could not start audio"), so the audio source
//     matters even with no sound card: ausine only produces 48 kHz stereo
//     (ausrc_srate 48000, ausrc_channels 2; baresip resamples for G.711).
//     No player module is loaded, which baresip accepts.
//   - dtls_srtp offers UDP/TLS/RTP/SAVPF (a=fingerprint, a=setup:actpass);
//     srtp-mand offers RTP/SAVP with a=crypto lines. CALL_MENC is emitted
//     once SRTP is keyed: at the answer for SDES, only after a completed
//     DTLS handshake for DTLS-SRTP (which needs the far end to speak DTLS).
//   - The TLS client sends no SNI.
package baresiptest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/umrouter/umrouter/internal/sipptest/testproc"
)

// ModulesDir is where Debian installs baresip's modules.
const ModulesDir = "/usr/lib/baresip/modules"

// Media encryption modes of an account (baresip's ;mediaenc= parameter).
const (
	// MediaEncNone offers plain RTP (RTP/AVP).
	MediaEncNone = ""
	// MediaEncSDES offers RTP/SAVP with a=crypto and requires SRTP
	// (srtp module, "srtp-mand").
	MediaEncSDES = "srtp-mand"
	// MediaEncSDESF is MediaEncSDES with RTP/SAVPF.
	MediaEncSDESF = "srtp-mandf"
	// MediaEncDTLS offers UDP/TLS/RTP/SAVP with a=fingerprint (dtls_srtp
	// module).
	MediaEncDTLS = "dtls_srtp"
)

// Account is one user agent of baresip. No REGISTER is ever sent
// (;regint=0).
type Account struct {
	// AOR is the address of record, "sip:user@domain", without URI
	// parameters (baresip would append them to every dialled URI). The
	// user parts must differ between accounts: Dial selects by AOR.
	AOR string
	// MediaEnc is one of the MediaEnc constants.
	MediaEnc string
	// Params are extra account parameters, e.g. ";answermode=manual".
	Params string
}

// Options configure Start.
type Options struct {
	// CertFile is the client certificate chain (PEM, leaf first) and
	// KeyFile its private key (PEM). Both are required: they are written
	// into one file for baresip's sip_certificate.
	CertFile, KeyFile string
	// CAFile is baresip's sip_cafile (see the package notes: libre 1.1.0
	// loads it but does not verify servers with it).
	CAFile string
	// Accounts are the user agents; at least one.
	Accounts []Account
	// SIPTrace adds baresip's -s: every SIP message in the output.
	SIPTrace bool
	// StartTimeout bounds the wait for the control port. Default 15 s.
	StartTimeout time.Duration
	// Lifetime is baresip's own guard (-t): it quits after this long
	// whatever happens. Default 5 minutes.
	Lifetime time.Duration
	// ExtraConfig is appended to the generated config file.
	ExtraConfig string
}

// Event is one user-agent event from ctrl_tcp.
type Event struct {
	Type       string `json:"type"`  // e.g. CALL_ESTABLISHED
	Class      string `json:"class"` // e.g. call, register, other
	AccountAOR string `json:"accountaor"`
	Direction  string `json:"direction"` // call events: outgoing, incoming
	PeerURI    string `json:"peeruri"`
	CallID     string `json:"id"`    // call events: the SIP Call-ID
	Param      string `json:"param"` // e.g. "488 Not Acceptable Here" for CALL_CLOSED
}

// StatusCode returns the SIP status code at the start of Param (a
// CALL_CLOSED event's reason, e.g. "488 Not Acceptable Here"), or 0.
func (e Event) StatusCode() int {
	f := strings.Fields(e.Param)
	if len(f) == 0 {
		return 0
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 100 || n > 699 {
		return 0
	}
	return n
}

func (e Event) String() string {
	return fmt.Sprintf("%s [%s] aor=%s id=%s param=%q", e.Type, e.Class, e.AccountAOR, e.CallID, e.Param)
}

// Response is the answer to a ctrl_tcp command.
type Response struct {
	OK    bool   `json:"ok"`
	Data  string `json:"data"`
	Token string `json:"token"`
}

// Baresip is a running baresip.
type Baresip struct {
	t        testing.TB
	cmd      *exec.Cmd
	done     chan struct{}
	dir      string
	out      *syncBuffer
	ctrlPort int
	conn     net.Conn
	wmu      sync.Mutex // serialises command writes

	mu        sync.Mutex
	events    []Event
	changed   chan struct{} // closed and replaced when events or pending change
	pending   map[string]chan Response
	readErr   error
	tokens    int
	stopOnce  sync.Once
	accounts  []Account
	configTxt string
}

// Binary returns the path of the baresip executable, skipping the test
// when baresip or the modules used here are missing (failing it when
// CI=true).
func Binary(t testing.TB) string {
	t.Helper()
	bin := testproc.LookPath(t, "baresip", "baresip")
	for _, m := range modules {
		if _, err := os.Stat(filepath.Join(ModulesDir, m)); err != nil {
			msg := fmt.Sprintf("baresip module %s missing (Debian package baresip-core): %v", m, err)
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s; CI=true", msg)
			}
			t.Skip(msg)
		}
	}
	return bin
}

// freePort chooses the control port (a variable for tests).
var freePort = testproc.FreePort

// modules are loaded in this order (module_tmp / module_app noted in
// writeConfig).
var modules = []string{"g711.so", "ausine.so", "srtp.so", "dtls_srtp.so", "account.so", "menu.so", "ctrl_tcp.so"}

// Start writes the configuration, runs baresip and returns once its
// control port answers. The test fails, with baresip's output in the log,
// when it exits or is not ready in time.
func Start(t testing.TB, opts Options) *Baresip {
	t.Helper()
	bin := Binary(t)
	if opts.CertFile == "" || opts.KeyFile == "" {
		t.Fatal("baresiptest: Options.CertFile and KeyFile are required")
	}
	if len(opts.Accounts) == 0 {
		t.Fatal("baresiptest: at least one account is required")
	}
	for _, a := range opts.Accounts {
		if !strings.HasPrefix(a.AOR, "sip:") || strings.ContainsAny(a.AOR, ";<>? ") {
			t.Fatalf("baresiptest: account AOR %q: want sip:user@domain without parameters", a.AOR)
		}
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 15 * time.Second
	}
	if opts.Lifetime <= 0 {
		opts.Lifetime = 5 * time.Minute
	}
	const attempts = 5
	for attempt := 1; ; attempt++ {
		dir := t.TempDir()
		port, err := freePort("tcp")
		if err != nil {
			t.Fatal(err)
		}
		b := &Baresip{t: t, done: make(chan struct{}), dir: dir, out: &syncBuffer{}, ctrlPort: port,
			changed: make(chan struct{}), pending: map[string]chan Response{}, accounts: opts.Accounts}
		b.writeConfig(t, opts)
		args := []string{"-f", dir, "-v", "-t", strconv.Itoa(int(opts.Lifetime.Seconds()))}
		if opts.SIPTrace {
			args = append(args, "-s")
		}
		b.cmd = exec.Command(bin, args...)
		b.cmd.Dir = dir
		b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
		b.cmd.Env = append(os.Environ(), "HOME="+dir) // nothing read from the real ~/.baresip
		if err := b.cmd.Start(); err != nil {
			t.Fatalf("baresiptest: start: %v", err)
		}
		go func() {
			_ = b.cmd.Wait()
			close(b.done)
		}()
		err = b.connect(opts.StartTimeout)
		if err == nil {
			t.Cleanup(func() {
				b.Stop()
				if t.Failed() {
					t.Logf("baresiptest: baresip output:\n%s", tail(b.Log(), 30000))
				}
			})
			return b
		}
		b.Stop()
		log := b.Log()
		if strings.Contains(log, "Address already in use") && attempt < attempts {
			t.Logf("baresiptest: control port %d taken, retrying (%d/%d)", port, attempt, attempts)
			continue
		}
		t.Fatalf("baresiptest: baresip not ready: %v\n--- config:\n%s\n--- output:\n%s", err, b.configTxt, tail(log, 8000))
	}
}

func (b *Baresip) writeConfig(t testing.TB, opts Options) {
	t.Helper()
	cert, err := os.ReadFile(opts.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(opts.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pemFile := filepath.Join(b.dir, "sip_certificate.pem")
	bundle := append(append(bytes.TrimRight(cert, "\n"), '\n'), key...)
	if err := os.WriteFile(pemFile, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	var c strings.Builder
	c.WriteString("# Written by internal/baresiptest: headless, loopback only, driven over ctrl_tcp.\n")
	c.WriteString("poll_method\t\tepoll\n")
	c.WriteString("sip_listen\t\t127.0.0.1:0\n") // UDP, TCP and TLS on ephemeral ports
	fmt.Fprintf(&c, "sip_certificate\t\t%s\n", pemFile)
	if opts.CAFile != "" {
		// Copied: config values end at the first blank, so a path with a
		// space (e.g. "umrouter test CA-ca.pem") would be cut.
		ca, err := os.ReadFile(opts.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		caFile := filepath.Join(b.dir, "sip_cafile.pem")
		if err := os.WriteFile(caFile, ca, 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&c, "sip_cafile\t\t%s\n", caFile)
	}
	c.WriteString("net_interface\t\t127.0.0.1\n")
	c.WriteString("call_local_timeout\t60\n")
	c.WriteString("call_max_calls\t\t4\n")
	// No sound card: a sine source and no player module (received audio
	// is dropped); the ring tones of the menu module have nowhere to play.
	// ausine only produces 48 kHz stereo: baresip resamples for the codec.
	c.WriteString("audio_source\t\tausine,440\n")
	c.WriteString("ausrc_srate\t\t48000\n")
	c.WriteString("ausrc_channels\t\t2\n")
	c.WriteString("rtp_timeout\t\t0\n")
	c.WriteString("rtcp_mux\t\tno\n")
	fmt.Fprintf(&c, "module_path\t\t%s\n", ModulesDir)
	c.WriteString("module\t\t\tg711.so\n")
	c.WriteString("module\t\t\tausine.so\n")
	c.WriteString("module\t\t\tsrtp.so\n")
	c.WriteString("module\t\t\tdtls_srtp.so\n")
	c.WriteString("module_tmp\t\taccount.so\n")
	c.WriteString("module_app\t\tmenu.so\n")
	c.WriteString("module_app\t\tctrl_tcp.so\n")
	fmt.Fprintf(&c, "ctrl_tcp_listen\t\t127.0.0.1:%d\n", b.ctrlPort)
	c.WriteString(opts.ExtraConfig)
	b.configTxt = c.String()
	if err := os.WriteFile(filepath.Join(b.dir, "config"), []byte(b.configTxt), 0o600); err != nil {
		t.Fatal(err)
	}
	var a strings.Builder
	for _, acc := range opts.Accounts {
		fmt.Fprintf(&a, "<%s>;regint=0", acc.AOR)
		if acc.MediaEnc != "" {
			fmt.Fprintf(&a, ";mediaenc=%s", acc.MediaEnc)
		}
		a.WriteString(acc.Params)
		a.WriteString("\n")
	}
	if err := os.WriteFile(filepath.Join(b.dir, "accounts"), []byte(a.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	b.configTxt += "--- accounts:\n" + a.String()
}

// connect waits for the control port, connects and starts the reader.
func (b *Baresip) connect(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	// baresip keeps running when ctrl_tcp cannot listen (port taken): stop
	// waiting as soon as it says so.
	abort, stopWatch := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(abort)
		for {
			log, changed := b.out.snapshot()
			if strings.Contains(log, "ctrl_tcp: failed to listen") {
				return
			}
			select {
			case <-changed:
			case <-b.done:
				return
			case <-stopWatch:
				return
			}
		}
	}()
	err := testproc.WaitBound(b.cmd.Process.Pid, "tcp", b.ctrlPort, abort, timeout)
	close(stopWatch)
	if err != nil && !b.Exited() && strings.Contains(b.Log(), "ctrl_tcp: failed to listen") {
		return fmt.Errorf("ctrl_tcp could not listen on port %d (baresip kept running without it)", b.ctrlPort)
	}
	if err != nil {
		return fmt.Errorf("ctrl_tcp port %d: %w", b.ctrlPort, err)
	}
	d := net.Dialer{Deadline: deadline}
	c, err := d.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(b.ctrlPort)))
	if err != nil {
		return err
	}
	b.conn = c
	go b.read()
	// The accounts are loaded before ctrl_tcp listens; check they all are.
	for _, a := range b.accounts {
		r, err := b.Command("uafind", a.AOR, time.Until(deadline))
		if err != nil {
			return err
		}
		if !r.OK || strings.Contains(strings.ToLower(r.Data), "not found") {
			return fmt.Errorf("account %s not loaded: %q", a.AOR, r.Data)
		}
	}
	return nil
}

// read parses netstrings from the control connection until it closes.
func (b *Baresip) read() {
	r := bufio.NewReader(b.conn)
	var err error
	for {
		var msg []byte
		msg, err = readNetstring(r)
		if err != nil {
			break
		}
		var head struct {
			Event    bool `json:"event"`
			Response bool `json:"response"`
		}
		if err = json.Unmarshal(msg, &head); err != nil {
			err = fmt.Errorf("baresiptest: bad ctrl_tcp message %q: %w", msg, err)
			break
		}
		switch {
		case head.Event:
			var e Event
			if err = json.Unmarshal(msg, &e); err != nil {
				break
			}
			b.mu.Lock()
			b.events = append(b.events, e)
			b.signalLocked()
			b.mu.Unlock()
		case head.Response:
			var resp Response
			if err = json.Unmarshal(msg, &resp); err != nil {
				break
			}
			b.mu.Lock()
			if ch, ok := b.pending[resp.Token]; ok {
				ch <- resp
				delete(b.pending, resp.Token)
			}
			b.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	b.mu.Lock()
	b.readErr = err
	b.signalLocked()
	b.mu.Unlock()
}

func (b *Baresip) signalLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// readNetstring reads one "len:data," frame (at most 1 MiB).
func readNetstring(r *bufio.Reader) ([]byte, error) {
	lenStr, err := r.ReadString(':')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(lenStr[:len(lenStr)-1])
	if err != nil || n < 0 || n > 1<<20 {
		return nil, fmt.Errorf("baresiptest: bad netstring length %q", lenStr)
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	if buf[n] != ',' {
		return nil, fmt.Errorf("baresiptest: netstring not terminated by ','")
	}
	return buf[:n], nil
}

// Command sends a ctrl_tcp command (a menu command name without the
// slash, e.g. "dial", "hangup", "uafind") and waits for its response.
func (b *Baresip) Command(command, params string, timeout time.Duration) (Response, error) {
	b.mu.Lock()
	if b.readErr != nil {
		err := b.readErr
		b.mu.Unlock()
		return Response{}, fmt.Errorf("baresiptest: control connection ended: %w", err)
	}
	b.tokens++
	token := fmt.Sprintf("t%d", b.tokens)
	ch := make(chan Response, 1)
	b.pending[token] = ch
	b.mu.Unlock()
	req := map[string]string{"command": command, "token": token}
	if params != "" {
		req["params"] = params
	}
	body, _ := json.Marshal(req)
	frame := append([]byte(strconv.Itoa(len(body))+":"), body...)
	frame = append(frame, ',')
	b.wmu.Lock()
	_ = b.conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := b.conn.Write(frame)
	b.wmu.Unlock()
	if err != nil {
		return Response{}, fmt.Errorf("baresiptest: send %s: %w", command, err)
	}
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		b.mu.Lock()
		changed, rerr := b.changed, b.readErr
		b.mu.Unlock()
		select {
		case r := <-ch:
			return r, nil
		default:
		}
		if rerr != nil {
			return Response{}, fmt.Errorf("baresiptest: control connection ended before the response to %s: %w", command, rerr)
		}
		select {
		case r := <-ch:
			return r, nil
		case <-changed:
		case <-b.done:
			return Response{}, fmt.Errorf("baresiptest: baresip exited before the response to %s", command)
		case <-tm.C:
			return Response{}, fmt.Errorf("baresiptest: no response to %s %q within %v", command, params, timeout)
		}
	}
}

// Events returns a copy of the events received so far.
func (b *Baresip) Events() []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Event(nil), b.events...)
}

// WaitEvent returns the first event at index from or later that match
// accepts, with its index, waiting up to timeout for it.
func (b *Baresip) WaitEvent(from int, timeout time.Duration, match func(Event) bool) (Event, int, error) {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for i := from; ; {
		b.mu.Lock()
		for ; i < len(b.events); i++ {
			if match(b.events[i]) {
				e := b.events[i]
				b.mu.Unlock()
				return e, i, nil
			}
		}
		changed, rerr := b.changed, b.readErr
		b.mu.Unlock()
		if rerr != nil {
			return Event{}, i, fmt.Errorf("baresiptest: control connection ended while waiting: %w", rerr)
		}
		select {
		case <-changed:
		case <-tm.C:
			return Event{}, i, fmt.Errorf("baresiptest: no matching event within %v; events so far:\n%s", timeout, b.eventLog())
		}
	}
}

func (b *Baresip) eventLog() string {
	var s strings.Builder
	for i, e := range b.Events() {
		fmt.Fprintf(&s, "  %d: %s\n", i, e)
	}
	return s.String()
}

// Call is an outgoing call placed by Dial.
type Call struct {
	b      *Baresip
	AOR    string
	ID     string // SIP Call-ID
	first  int    // index of the call's first event
	Result Event  // CALL_ESTABLISHED or CALL_CLOSED, set by Wait
}

// Dial makes the account aor the current user agent and dials uri (e.g.
// "sip:12345@127.0.0.1:5061;transport=tls"). It returns once baresip
// reported the call's first event, which gives its Call-ID.
func (b *Baresip) Dial(aor, uri string, timeout time.Duration) (*Call, error) {
	deadline := time.Now().Add(timeout)
	r, err := b.Command("uafind", aor, timeout)
	if err != nil {
		return nil, err
	}
	if !r.OK || strings.Contains(strings.ToLower(r.Data), "not found") {
		return nil, fmt.Errorf("baresiptest: uafind %s: %q", aor, r.Data)
	}
	known := map[string]bool{}
	from := 0
	b.mu.Lock()
	for _, e := range b.events {
		if e.CallID != "" {
			known[e.CallID] = true
		}
	}
	from = len(b.events)
	b.mu.Unlock()
	r, err = b.Command("dial", uri, time.Until(deadline))
	if err != nil {
		return nil, err
	}
	if !r.OK {
		return nil, fmt.Errorf("baresiptest: dial %s: %q", uri, r.Data)
	}
	e, i, err := b.WaitEvent(from, time.Until(deadline), func(e Event) bool {
		return e.Class == "call" && e.AccountAOR == aor && e.CallID != "" && !known[e.CallID]
	})
	if err != nil {
		return nil, fmt.Errorf("baresiptest: dial %s from %s: %w", uri, aor, err)
	}
	return &Call{b: b, AOR: aor, ID: e.CallID, first: i}, nil
}

// Wait waits for the call to be answered (CALL_ESTABLISHED) or to end
// before that (CALL_CLOSED, whose StatusCode is the final response), and
// returns that event.
func (c *Call) Wait(timeout time.Duration) (Event, error) {
	e, _, err := c.b.WaitEvent(c.first, timeout, func(e Event) bool {
		return e.CallID == c.ID && (e.Type == "CALL_ESTABLISHED" || e.Type == "CALL_CLOSED")
	})
	if err != nil {
		return e, fmt.Errorf("baresiptest: call %s: %w", c.ID, err)
	}
	c.Result = e
	return e, nil
}

// Events returns the events of this call received so far.
func (c *Call) Events() []Event {
	var out []Event
	for _, e := range c.b.Events() {
		if e.CallID == c.ID {
			out = append(out, e)
		}
	}
	return out
}

// Hangup hangs the call up (it must be the current call of its user agent,
// as it is after Dial with one call at a time) and waits for CALL_CLOSED.
func (c *Call) Hangup(timeout time.Duration) (Event, error) {
	deadline := time.Now().Add(timeout)
	if r, err := c.b.Command("uafind", c.AOR, timeout); err != nil || !r.OK {
		return Event{}, fmt.Errorf("baresiptest: uafind %s: %v %q", c.AOR, err, r.Data)
	}
	if r, err := c.b.Command("hangup", "", time.Until(deadline)); err != nil || !r.OK {
		return Event{}, fmt.Errorf("baresiptest: hangup: %v %q", err, r.Data)
	}
	e, _, err := c.b.WaitEvent(c.first, time.Until(deadline), func(e Event) bool {
		return e.CallID == c.ID && e.Type == "CALL_CLOSED"
	})
	return e, err
}

// Log returns baresip's output so far.
func (b *Baresip) Log() string { return b.out.String() }

// Dir returns the configuration directory.
func (b *Baresip) Dir() string { return b.dir }

// Config returns the generated config and accounts files, for reports.
func (b *Baresip) Config() string { return b.configTxt }

// Stop asks baresip to quit over ctrl_tcp, then sends SIGTERM, then
// SIGKILL, each step bounded, and waits for it. Safe to call more than once.
func (b *Baresip) Stop() {
	b.stopOnce.Do(func() {
		if b.cmd == nil || b.cmd.Process == nil {
			return
		}
		steps := []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}
		if b.conn != nil {
			select {
			case <-b.done:
			default:
				if _, err := b.Command("quit", "", 2*time.Second); err == nil || b.Exited() {
					steps = append([]syscall.Signal{0}, steps...) // first wait for it to quit
				}
			}
		}
		for _, sig := range steps {
			if sig != 0 {
				_ = b.cmd.Process.Signal(sig)
			}
			tm := time.NewTimer(5 * time.Second)
			select {
			case <-b.done:
				tm.Stop()
				if b.conn != nil {
					b.conn.Close()
				}
				return
			case <-tm.C:
			}
		}
		b.t.Errorf("baresiptest: baresip (pid %d) did not exit after SIGKILL", b.cmd.Process.Pid)
	})
}

// Exited reports whether the baresip process has ended.
func (b *Baresip) Exited() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// Version returns the first line of "baresip -h" (e.g. "baresip v1.0.0
// Copyright ...").
func Version(t testing.TB) string {
	t.Helper()
	out, _ := exec.Command(Binary(t), "-h").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// syncBuffer is a bytes.Buffer safe for exec.Cmd's writer goroutines and
// concurrent readers.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed and replaced at every write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

// snapshot returns the content and a channel closed at the next write.
func (s *syncBuffer) snapshot() (string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.b.String(), s.changed
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
