package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/umrouter/umrouter/dialplan"
	"github.com/umrouter/umrouter/internal/sipptest"
	"github.com/umrouter/umrouter/internal/testpki"
)

// The torture test sends every message of RFC 4475 (SIP torture test
// messages) and RFC 5118 (IPv6 torture test messages), byte for byte as the
// RFCs have them, over mutual TLS from a configured gateway, each on a
// connection of its own, and checks the outcome that
// testdata/torture/expected.txt records for it; after each message another
// gateway's OPTIONS must still be answered. testdata/torture/README.md says
// where the messages come from.

const (
	tortureDir = "testdata/torture"
	// watcherName is the second gateway, the one that keeps asking
	// umrouter whether it is alive while the first one tortures it.
	watcherName = "gw2.example.test"
	// tortureWait bounds every wait of the test: an answer, a close.
	tortureWait = 10 * time.Second
)

// tortureBugs are the torture messages whose expected outcome umrouter does
// not deliver yet; each says what happens instead and where. Such a message
// is still sent, and the other gateway still checked after it, but its
// outcome is not: the case is skipped with that text. Fixing the bug means
// deleting its line here; UMROUTER_TORTURE_BUGS=1 checks them all as if
// they were fixed. (The first run's nine, from intmeth to ipv4-mapped-ipv6,
// were fixed in bd6a90e.)
var tortureBugs = map[string]string{}

// tortureCase is one line of testdata/torture/expected.txt.
type tortureCase struct {
	name    string
	outcome string
	// steps are the outcome's ','-separated steps, each a list of '|'
	// alternatives.
	steps [][]string
	note  string
}

// readTortureManifest reads testdata/torture/expected.txt.
func readTortureManifest(t testing.TB) []tortureCase {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(tortureDir, "expected.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []tortureCase
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Fatalf("expected.txt:%d: want `name outcome [note]`, got %q", i+1, line)
		}
		tc := tortureCase{name: f[0], outcome: f[1], note: strings.Join(f[2:], " ")}
		for _, step := range strings.Split(tc.outcome, ",") {
			alts := strings.Split(step, "|")
			for _, a := range alts {
				if !validTortureStep(a) || (len(alts) > 1 && !isResponseStep(a)) {
					t.Fatalf("expected.txt:%d: outcome step %q is not one of forwarded, NNN, NNN+close, sent, close, none, incomplete (only responses have alternatives)", i+1, a)
				}
			}
			tc.steps = append(tc.steps, alts)
		}
		cases = append(cases, tc)
	}
	return cases
}

func validTortureStep(s string) bool {
	switch s {
	case "forwarded", "sent", "close", "none", "incomplete":
		return true
	}
	code, _ := strings.CutSuffix(s, "+close")
	n, err := strconv.Atoi(code)
	return err == nil && n >= 200 && n <= 699
}

func isResponseStep(s string) bool {
	return s == "forwarded" || validTortureStep(s) && !isStreamStep(s)
}

// isStreamStep: the step is about the stream, not one response.
func isStreamStep(s string) bool {
	return s == "sent" || s == "close" || s == "none" || s == "incomplete"
}

// tortureMessages returns every testdata/torture/*.dat by name (without .dat).
func tortureMessages(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(tortureDir, "*.dat"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no torture messages in %s: %v", tortureDir, err)
	}
	msgs := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		msgs[strings.TrimSuffix(filepath.Base(p), ".dat")] = b
	}
	return msgs
}

// TestTortureManifestCoversEveryMessage keeps the message files and the
// manifest in step: every message has an expected outcome and every
// outcome a message.
func TestTortureManifestCoversEveryMessage(t *testing.T) {
	msgs := tortureMessages(t)
	seen := map[string]bool{}
	for _, tc := range readTortureManifest(t) {
		if seen[tc.name] {
			t.Errorf("%s: listed twice in expected.txt", tc.name)
		}
		seen[tc.name] = true
		if _, ok := msgs[tc.name]; !ok {
			t.Errorf("%s: in expected.txt but no %s.dat", tc.name, tc.name)
		}
	}
	var missing []string
	for name := range msgs {
		if !seen[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	for _, name := range missing {
		t.Errorf("%s.dat has no line in expected.txt", name)
	}
	// RFC 4475 has 49 messages, RFC 5118 has 12.
	if len(msgs) != 61 {
		t.Errorf("%d torture messages, want the 49 of RFC 4475 and the 12 of RFC 5118", len(msgs))
	}
}

// tortureConfig is two gateways on an unsecured sip-uri plan (the most
// permissive one: valid messages get through to the backend whenever their
// Request-URI names a user) and one UDP backend. Health probes stay off
// (baseConfig), so that every request the backend counter shows is one the
// test sent; a request the backend leaves unanswered times out within
// seconds (health.timeout 1 s).
func tortureConfig(backend string) (Config, dialplan.Plans) {
	cfg, _ := baseConfig(backend)
	cfg.Gateways = []Gateway{
		{Name: "gw1", Address: gwName, DialPlan: "torture"},
		{Name: "gw2", Address: watcherName, DialPlan: "torture"},
	}
	cfg.Backends.Health.Interval = time.Hour
	cfg.Backends.Health.Timeout = time.Second
	return cfg, dialplan.Plans{{Name: "torture", Security: dialplan.Unsecured, URIType: dialplan.SIPURI}}
}

func TestTortureMessages(t *testing.T) {
	cases := readTortureManifest(t)
	msgs := tortureMessages(t)
	uas := sipptest.StartUAS(t, sipptest.UASOptions{
		Scenario: filepath.Join(tortureDir, "uas_torture.xml"),
		// The RFC 5118 messages share Call-IDs: SIPp must not take a new
		// request for one of them as a stray message of an ended call.
		ExtraArgs: []string{"-deadcall_wait", "0"},
	})
	pki := newTestPKI(t)
	watcherCert := pki.ca.Issue(t, testpki.LeafOptions{CN: watcherName, DNS: []string{watcherName}})
	cfg, plans := tortureConfig(uas.Addr())
	p := startProxy(t, pki, cfg, plans)
	watcher, err := dialGateway(t, p.tlsAddr, pki, &watcherCert.TLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	watcher.name = "watcher"
	forwards := func() float64 {
		return testutil.ToFloat64(p.m.BackendRequests.WithLabelValues(uas.Addr(), "ok")) +
			testutil.ToFloat64(p.m.BackendRequests.WithLabelValues(uas.Addr(), "error"))
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg, ok := msgs[tc.name]
			if !ok {
				t.Fatalf("no %s.dat", tc.name)
			}
			if bug, ok := tortureBugs[tc.name]; ok && os.Getenv("UMROUTER_TORTURE_BUGS") == "" {
				gw := dialStreamPeer(t, p.tlsAddr, pki)
				gw.write(t, msg)
				gw.closeWrite(t)
				gw.drain(t)
				t.Skip(bug)
			}
			before := forwards()
			gw := dialStreamPeer(t, p.tlsAddr, pki)
			gw.write(t, msg)
			reached := tc.check(t, gw, msg, func() { watcherAlive(t, watcher) })
			if got := forwards() - before; got != float64(reached) {
				t.Errorf("umrouter forwarded %v requests to the backend, want %d (outcome %s)", got, reached, tc.outcome)
			}
		})
		// Whatever the message did, another gateway is still served.
		watcher.send(optionsTo(watcher, ""))
		if r := watcher.response(tortureWait); r.StatusCode != 200 {
			t.Fatalf("after %s: the other gateway's OPTIONS got %s, want 200", tc.name, r.StartLine())
		}
		// The message's transactions end before the next message, and
		// leave the backend in the pool.
		waitFor(t, "the transactions of "+tc.name+" to end", func() bool { return inFlight(p.s) == 0 })
		for _, b := range p.s.rt().pool.servers {
			if b.downUntil.Load() <= time.Now().UnixNano() {
				continue
			}
			if _, known := tortureBugs[tc.name]; !known {
				t.Errorf("after %s: backend %s is marked down", tc.name, b.addr)
			}
			b.downUntil.Store(0) // the next message gets a fair chance
		}
	}
}

// inFlight counts the transactions still calling or proceeding, reading
// each one's state under its own lock (txTable.len reads it under the
// table's lock only, racing with the handlers).
func inFlight(s *Server) int {
	s.txs.mu.Lock()
	txs := make([]*transaction, 0, len(s.txs.client))
	for _, tx := range s.txs.client {
		txs = append(txs, tx)
	}
	s.txs.mu.Unlock()
	n := 0
	for _, tx := range txs {
		tx.mu.Lock()
		if tx.state == txCalling || tx.state == txProceeding {
			n++
		}
		tx.mu.Unlock()
	}
	return n
}

// watcherAlive sends the other gateway's OPTIONS and waits for its 200,
// failing t (a subtest: the watcher's own helpers would fail its parent).
func watcherAlive(t *testing.T, w *sipClient) {
	t.Helper()
	if _, err := w.conn.Write([]byte(optionsTo(w, ""))); err != nil {
		t.Fatalf("the other gateway's OPTIONS: %v", err)
	}
	select {
	case m, ok := <-w.msgs:
		if !ok {
			t.Fatalf("the other gateway's connection ended: %v", <-w.errs)
		}
		if r, isRes := m.(*sip.Response); !isRes || r.StatusCode != 200 {
			t.Fatalf("the other gateway's OPTIONS got %q, want a 200", firstLine([]byte(m.String())))
		}
	case <-time.After(tortureWait):
		t.Fatalf("the other gateway's OPTIONS was not answered within %s", tortureWait)
	}
}

// check plays tc's outcome steps on gw, where msg was sent, and returns
// how many requests reached the backend. alive checks that another gateway
// is served; it is called while gw's message is stuck half-read.
func (tc tortureCase) check(t *testing.T, gw *streamPeer, msg []byte, alive func()) (reached int) {
	t.Helper()
	open := true
	// inFlight: a request went to the backend whose answer may or may not
	// make it back before the stream ends.
	inFlight := false
	for i, step := range tc.steps {
		what := fmt.Sprintf("step %d of %q (%s)", i+1, tc.outcome, tc.note)
		switch step[0] {
		case "none":
			// Checked below: nothing may come before the sentinel's answer.
		case "sent":
			reached++
			inFlight = true
		case "close":
			gw.expectClose(t, what, inFlight)
			open = false
		case "incomplete":
			alive()
			gw.closeWrite(t)
			gw.expectClose(t, what, inFlight)
			open = false
		default:
			m := gw.nextFinal(t, what)
			alt, ok := matchTortureStep(step, m)
			if !ok {
				t.Fatalf("%s: got %q (from the backend: %v)", what, m.start, m.backend)
			}
			if len(step) > 1 {
				t.Logf("%s: %s (%q)", what, alt, m.start)
			}
			checkResponseVia(t, msg, m)
			if alt == "forwarded" {
				reached++
				checkForwardedLine(t, tc.name, msg, m.line)
			}
			if strings.HasSuffix(alt, "+close") {
				gw.expectClose(t, what, inFlight)
				open = false
			}
		}
	}
	if open {
		gw.sentinel(t, tc.name)
		gw.closeWrite(t)
		gw.expectClose(t, "after the sentinel", false)
	}
	return reached
}

// matchTortureStep returns the alternative of step that m satisfies.
func matchTortureStep(step []string, m peerMsg) (string, bool) {
	for _, alt := range step {
		if alt == "forwarded" {
			if m.backend {
				return alt, true
			}
			continue
		}
		code, _ := strings.CutSuffix(alt, "+close")
		if n, _ := strconv.Atoi(code); !m.backend && m.status == n {
			return alt, true
		}
	}
	return "", false
}

// checkForwardedLine: a proxy forwards the method and the Request-URI as it
// got them (RFC 3261 section 16.6: no case change, no unescaping, no
// reordering), without extra SP (RFC 4475 sections 3.1.2.9, 3.1.2.10), and
// without escaped headers in the Request-URI (section 3.1.2.11).
func checkForwardedLine(t *testing.T, name string, msg []byte, got string) {
	t.Helper()
	f := strings.Split(got, " ")
	if len(f) != 3 || f[2] != "SIP/2.0" {
		t.Errorf("the backend got request line %q: want METHOD SP Request-URI SP SIP/2.0", got)
		return
	}
	if name == "escruri" {
		if strings.Contains(f[1], "?") {
			t.Errorf("the backend got Request-URI %q: the escaped headers must not be forwarded", f[1])
		}
		return
	}
	for _, line := range strings.Split(string(msg), "\r\n") {
		if sent := strings.Fields(line); len(sent) == 3 && sent[0] == f[0] && sent[1] == f[1] && sent[2] == "SIP/2.0" {
			return
		}
	}
	t.Errorf("the backend got request line %q; umrouter was sent:\n%s", got, firstLine(msg))
}

// checkResponseVia: the gateway matches a response to its request by the
// top Via's branch and sent-by (RFC 3261 section 17.1.3), so a response
// must carry them as the request had them, whatever LWS it was written with
// and whatever received and rport values were added (RFC 5118 section 4.9:
// an IPv6 sent-by keeps its brackets, or its port becomes part of the
// address).
func checkResponseVia(t *testing.T, msg []byte, m peerMsg) {
	t.Helper()
	var sent *peerMsg
	for _, req := range splitMessages(msg) {
		if req.callID == m.callID {
			sent = &req
			break
		}
	}
	if sent == nil {
		t.Errorf("response %q for call %q, which umrouter was not sent", m.start, m.callID)
		return
	}
	if want, got := viaKey(sent.topVia), viaKey(m.topVia); want != got {
		t.Errorf("response %q has top Via %q, the request had %q: the gateway cannot match it", m.start, m.topVia, sent.topVia)
	}
}

// viaKey is what matches a response to a request in a Via value: the
// transport and sent-by (LWS removed, protocol in upper case) and the branch.
func viaKey(v string) string {
	v = strings.Join(strings.Fields(v), "")
	sentBy, params, _ := strings.Cut(v, ";")
	branch := ""
	for _, p := range strings.Split(params, ";") {
		if name, value, ok := strings.Cut(p, "="); ok && strings.EqualFold(name, "branch") {
			branch = value
		}
	}
	if i := strings.Index(strings.ToUpper(sentBy), "SIP/2.0/"); i >= 0 {
		tp := sentBy[i+len("SIP/2.0/"):]
		n := 0
		for n < len(tp) && (tp[n] >= 'A' && tp[n] <= 'Z' || tp[n] >= 'a' && tp[n] <= 'z') {
			n++
		}
		sentBy = "SIP/2.0/" + strings.ToUpper(tp[:n]) + " " + tp[n:]
	}
	return sentBy + " branch=" + branch
}

// splitMessages cuts a torture message's bytes the way umrouter's framing
// does (one file can hold two messages) and reads each one's headers.
func splitMessages(b []byte) []peerMsg {
	fr := frameReader{r: bufio.NewReader(bytes.NewReader(b)), maxBytes: 1 << 20}
	var out []peerMsg
	for {
		frame, err := fr.next()
		if err != nil {
			if len(out) == 0 || len(fr.partial()) > 0 {
				// No Content-Length, or cut short: what was read still
				// names the call.
				out = append(out, parsePeerMsg(fr.partial()))
			}
			return out
		}
		out = append(out, parsePeerMsg(frame))
	}
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(line)
}

// streamPeer is a gateway's TLS connection read without sipgo: what comes
// back echoes torture, and the test's own reader must not choke on it.
type streamPeer struct {
	conn *tls.Conn
	msgs chan peerMsg
	errc chan error
	seq  int
}

// peerMsg is what the test reads from a message it received.
type peerMsg struct {
	start   string
	status  int // 0 for a request
	callID  string
	topVia  string // the first Via value, unfolded
	backend bool   // carries X-Torture-UAS: the backend answered
	line    string // X-Torture-Line: the request line the backend got
}

func dialStreamPeer(t *testing.T, addr string, pki *testPKI) *streamPeer {
	t.Helper()
	cfg := &tls.Config{
		ServerName: "localhost",
		RootCAs:    poolOf(pki.ca.Cert),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &pki.gw.TLS, nil
		},
	}
	d := net.Dialer{Timeout: tortureWait}
	conn, err := tls.DialWithDialer(&d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	sp := &streamPeer{conn: conn, msgs: make(chan peerMsg, 16), errc: make(chan error, 1)}
	go func() {
		fr := frameReader{r: bufio.NewReader(conn), maxBytes: 1 << 20}
		for {
			b, err := fr.next()
			if err != nil {
				sp.errc <- err
				close(sp.msgs)
				return
			}
			sp.msgs <- parsePeerMsg(b)
		}
	}()
	return sp
}

// parsePeerMsg reads the start line and the few headers the test needs.
func parsePeerMsg(b []byte) peerMsg {
	head, _, _ := bytes.Cut(b, []byte("\r\n\r\n"))
	var lines []string
	for i, l := range strings.Split(string(head), "\r\n") {
		if i > 1 && (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) {
			lines[len(lines)-1] += " " + strings.TrimSpace(l) // folded
			continue
		}
		lines = append(lines, l)
	}
	m := peerMsg{start: lines[0]}
	if rest, ok := strings.CutPrefix(m.start, "SIP/2.0 "); ok {
		code, _, _ := strings.Cut(rest, " ")
		m.status, _ = strconv.Atoi(code)
	}
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "call-id", "i":
			if m.callID == "" {
				m.callID = value
			}
		case "via", "v":
			if m.topVia == "" {
				m.topVia, _, _ = strings.Cut(value, ",")
			}
		case "x-torture-uas":
			m.backend = true
		case "x-torture-line":
			m.line = value
		}
	}
	return m
}

func (sp *streamPeer) write(t *testing.T, b []byte) {
	t.Helper()
	_ = sp.conn.SetWriteDeadline(time.Now().Add(tortureWait))
	if _, err := sp.conn.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// closeWrite ends the gateway's side of the stream (TLS close_notify):
// umrouter reads the end of the stream after everything that came before.
func (sp *streamPeer) closeWrite(t *testing.T) {
	t.Helper()
	if err := sp.conn.CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
}

// nextFinal returns the next final response, skipping provisional ones.
func (sp *streamPeer) nextFinal(t *testing.T, what string) peerMsg {
	t.Helper()
	deadline := time.After(tortureWait)
	for {
		select {
		case m, ok := <-sp.msgs:
			if !ok {
				t.Fatalf("%s: connection closed (%v), want a response", what, <-sp.errc)
			}
			if m.status >= 200 {
				return m
			}
			if m.status == 0 {
				t.Fatalf("%s: got request %q, want a response", what, m.start)
			}
		case <-deadline:
			t.Fatalf("%s: no final response within %s", what, tortureWait)
		}
	}
}

// expectClose waits for umrouter to close the connection; nothing may
// arrive first but, when inFlight, the provisional and final answers of a
// request that went to the backend.
func (sp *streamPeer) expectClose(t *testing.T, what string, inFlight bool) {
	t.Helper()
	deadline := time.After(tortureWait)
	for {
		select {
		case m, ok := <-sp.msgs:
			if !ok {
				return
			}
			if !inFlight || !(m.status > 0 && m.status < 200 || m.backend) {
				t.Fatalf("%s: got %q, want the connection closed", what, m.start)
			}
		case <-deadline:
			t.Fatalf("%s: connection still open after %s, want it closed", what, tortureWait)
		}
	}
}

// drain reads and drops what arrives until umrouter closes the connection.
func (sp *streamPeer) drain(t *testing.T) {
	t.Helper()
	deadline := time.After(tortureWait)
	for {
		select {
		case _, ok := <-sp.msgs:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("connection still open %s after the gateway closed its side", tortureWait)
		}
	}
}

// sentinel sends an OPTIONS for umrouter itself on the connection and
// waits for its 200: the connection is still read, in sync, and nothing
// came back for the torture message before it.
func (sp *streamPeer) sentinel(t *testing.T, name string) {
	t.Helper()
	sp.seq++
	callID := fmt.Sprintf("sentinel-%d-%s", sp.seq, name)
	local := sp.conn.LocalAddr().String()
	sp.write(t, []byte(fmt.Sprintf("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS %s;branch=z9hG4bK-%s\r\nMax-Forwards: 70\r\n"+
		"From: <sip:sentinel@%s>;tag=s%d\r\nTo: <sip:127.0.0.1>\r\nCall-ID: %s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
		local, callID, gwName, sp.seq, callID)))
	deadline := time.After(tortureWait)
	for {
		select {
		case m, ok := <-sp.msgs:
			if !ok {
				t.Fatalf("connection closed (%v) before the sentinel OPTIONS was answered", <-sp.errc)
			}
			if m.callID != callID {
				t.Fatalf("got %q (call %q) before the sentinel's answer: want nothing for the torture message", m.start, m.callID)
			}
			if m.status != 200 {
				t.Fatalf("the sentinel OPTIONS got %q, want 200", m.start)
			}
			return
		case <-deadline:
			t.Fatalf("the sentinel OPTIONS was not answered within %s", tortureWait)
		}
	}
}
