package main

// The deployment guide (docs/deployment-guide.md) is executable: this file
// reads it and performs it, block by block, on loopback, against the real
// binary that the guide's own install step builds. Its section "How this
// guide is tested" describes the block markup for the guide's readers.

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/umrouter/umrouter/tlsmgr"
)

const (
	// guideBlockTimeout bounds one command block; the install step builds
	// the binary, which on a cold cache is the slowest thing here.
	guideBlockTimeout = 5 * time.Minute
	// guideRetryWindow bounds a `retry` block: checks that wait on the
	// daemon (readiness, a certificate switch, a watched file).
	guideRetryWindow = 30 * time.Second
	// guideStartWindow bounds the wait for a background command's output.
	guideStartWindow = 30 * time.Second
	// guidePoll is the polling interval of retries, not a wait for an outcome.
	guidePoll = 200 * time.Millisecond
	// guideNodes is the number of umrouter nodes the guide runs.
	guideNodes = 3
)

// guideBlock is one fenced code block of the guide.
type guideBlock struct {
	line   int               // 1-based line of the opening fence
	lang   string            // sh, yaml, text, ...
	kind   string            // sh, file, update, output, illustration
	attrs  map[string]string // node, exit, retry, background, id, file, update, from
	text   string            // content, de-indented, with its final newline
	output *guideBlock       // for sh: the guide-output block under it
}

func (b *guideBlock) node() int {
	n, _ := strconv.Atoi(b.attrs["node"])
	if n == 0 {
		return 1
	}
	return n
}

func (b *guideBlock) has(attr string) bool { _, ok := b.attrs[attr]; return ok }

var guideFence = regexp.MustCompile("^( *)```(.*)$")

// parseGuide splits the markdown into its code blocks and classifies them.
// Every code block must say what it is: `guide` (run it), `guide-output`
// (the output of the command block above it) or `illustration` (shown, not
// run); anything else is an error, so nothing escapes the test.
func parseGuide(md string) ([]*guideBlock, error) {
	var blocks []*guideBlock
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		m := guideFence.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		indent, info := m[1], strings.TrimSpace(m[2])
		b := &guideBlock{line: i + 1, attrs: map[string]string{}}
		var body strings.Builder
		closed := false
		for i++; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) == "```" {
				closed = true
				break
			}
			body.WriteString(strings.TrimPrefix(lines[i], indent))
			body.WriteString("\n")
		}
		if !closed {
			return nil, fmt.Errorf("line %d: code block never closed", b.line)
		}
		b.text = body.String()
		fields := strings.Fields(info)
		if len(fields) < 2 {
			return nil, fmt.Errorf("line %d: code block %q is not marked guide, guide-output or illustration", b.line, info)
		}
		b.lang = fields[0]
		for _, f := range fields[2:] {
			k, v, _ := strings.Cut(f, "=")
			b.attrs[k] = v
		}
		switch fields[1] {
		case "guide":
			switch {
			case b.lang == "sh" || b.lang == "bash":
				b.kind = "sh"
			case b.lang == "yaml" && b.attrs["file"] != "" && b.attrs["update"] == "":
				b.kind = "file"
			case b.lang == "yaml" && b.attrs["update"] != "" && b.attrs["file"] == "":
				b.kind = "update"
			default:
				return nil, fmt.Errorf("line %d: a guide block is sh, or yaml with file=PATH or update=PATH; got %q", b.line, info)
			}
		case "guide-output":
			var prev *guideBlock
			if len(blocks) > 0 {
				prev = blocks[len(blocks)-1]
			}
			if prev == nil || prev.kind != "sh" || prev.output != nil {
				return nil, fmt.Errorf("line %d: guide-output must follow a sh guide block", b.line)
			}
			b.kind = "output"
			prev.output = b
		case "illustration":
			b.kind = "illustration"
		default:
			return nil, fmt.Errorf("line %d: code block %q is not marked guide, guide-output or illustration", b.line, info)
		}
		for k := range b.attrs {
			switch k {
			case "node", "exit", "retry", "background", "id", "file", "update", "from":
			default:
				return nil, fmt.Errorf("line %d: unknown attribute %q", b.line, k)
			}
		}
		blocks = append(blocks, b)
	}
	return blocks, nil
}

// guideLinePattern turns one line of a guide-output block into a regular
// expression: … matches anything, the rest is literal.
func guideLinePattern(line string) *regexp.Regexp {
	parts := strings.Split(strings.TrimRight(line, " \t"), "…")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
}

// guideMatch reports whether every non-empty line of want matches a line
// of got, in order (got may have more lines); otherwise it says which line
// was not found.
func guideMatch(want, got string) (bool, string) {
	gotLines := strings.Split(got, "\n")
	j := 0
	for _, w := range strings.Split(want, "\n") {
		if strings.TrimSpace(w) == "" {
			continue
		}
		re := guideLinePattern(w)
		for ; j < len(gotLines); j++ {
			if re.MatchString(strings.TrimRight(gotLines[j], " \t\r")) {
				break
			}
		}
		if j == len(gotLines) {
			return false, w
		}
		j++
	}
	return true, ""
}

var guideTopKey = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*):`)

// guideSections splits a YAML document into its preamble and top-level
// sections (a key line and everything up to the next top-level key).
func guideSections(doc string) (pre string, keys []string, sections map[string]string) {
	sections = map[string]string{}
	cur := ""
	for _, line := range strings.SplitAfter(doc, "\n") {
		if m := guideTopKey.FindStringSubmatch(line); m != nil {
			cur = m[1]
			if _, dup := sections[cur]; !dup {
				keys = append(keys, cur)
			}
			sections[cur] = ""
		}
		if cur == "" {
			pre += line
		} else {
			sections[cur] += line
		}
	}
	return pre, keys, sections
}

// guideUpdate replaces, in base, the top-level sections that patch lists,
// and appends those base does not have: what the guide means by "change
// these sections to".
func guideUpdate(base, patch string) string {
	pre, keys, secs := guideSections(base)
	_, pkeys, psecs := guideSections(patch)
	for _, k := range pkeys {
		if _, ok := secs[k]; !ok {
			keys = append(keys, k)
		}
		secs[k] = psecs[k]
	}
	var b strings.Builder
	b.WriteString(pre)
	for _, k := range keys {
		s := secs[k]
		if !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		b.WriteString(s)
	}
	return b.String()
}

func TestGuideMarkupParsesMatchesAndUpdates(t *testing.T) {
	md := "x\n```sh guide node=2 exit=1 retry\necho a\n```\n```text guide-output\n…a\n```\n" +
		"  ```yaml guide update=/etc/x.yaml from=1\n  k: v\n  ```\n```powershell illustration\nGet-X\n```\n"
	blocks, err := parseGuide(md)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 4 || blocks[0].kind != "sh" || blocks[0].node() != 2 || !blocks[0].has("retry") ||
		blocks[0].attrs["exit"] != "1" || blocks[0].output != blocks[1] || blocks[2].kind != "update" ||
		blocks[2].text != "k: v\n" || blocks[3].kind != "illustration" {
		t.Errorf("parsed %+v", blocks)
	}
	for _, bad := range []string{"```sh\nx\n```\n", "```text guide-output\nx\n```\n", "```sh guide colour=1\nx\n```\n", "```sh guide\nx\n"} {
		if _, err := parseGuide(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}

	for _, tt := range []struct {
		want, got string
		ok        bool
	}{
		{"a\nc", "a\nb\nc\n", true},
		{"c\na", "a\nb\nc\n", false},
		{"thumbprint …", "thumbprint 01ab", true},
		{"x … y", "x (a) y  ", true},
		{"x … y", "x (a) z", false},
		{"a.b", "aXb", false},
	} {
		if ok, _ := guideMatch(tt.want, tt.got); ok != tt.ok {
			t.Errorf("guideMatch(%q, %q) = %v", tt.want, tt.got, ok)
		}
	}

	m := "# HELP x\numrouter_calls_active 2\numrouter_calls_active_x 5\n" +
		"umrouter_responses_total{class=\"2xx\",gateway=\"a\",method=\"BYE\"} 3\n" +
		"umrouter_responses_total{class=\"2xx\",gateway=\"b\",method=\"BYE\"} 1\n" +
		"umrouter_responses_total{class=\"4xx\",gateway=\"b\",method=\"BYE\"} 7\n"
	if got := guideSample(m, "umrouter_calls_active"); got != 2 {
		t.Errorf("calls_active = %v", got)
	}
	if got := guideSample(m, "umrouter_responses_total", `class="2xx"`, `method="BYE"`); got != 4 {
		t.Errorf("BYE 2xx = %v", got)
	}

	base := "node_name: a\ntls:\n  x: 1\ngateways: []\n"
	got := guideUpdate(base, "gateways:\n  - name: g\nstartup_mode: dual\n")
	if want := "node_name: a\ntls:\n  x: 1\ngateways:\n  - name: g\nstartup_mode: dual\n"; got != want {
		t.Errorf("guideUpdate = %q, want %q", got, want)
	}
}

// guideBuffer collects a process's output for the test and its logs.
type guideBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (g *guideBuffer) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.b.Write(p)
}

func (g *guideBuffer) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.b.String()
}

// guideTail is the end of a long text, for failure messages.
func guideTail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = append([]string{"[…]"}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "\n")
}

// guideProc is a background command of the guide (the daemons, SIPp).
type guideProc struct {
	line int
	name string
	cmd  *exec.Cmd
	out  *guideBuffer
	done chan struct{}
	code int
}

func (p *guideProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// guideShell is a node's terminal: one bash process for the whole guide,
// so that variables and the working directory carry from block to block.
type guideShell struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	marks  chan string
	stderr *guideBuffer
	cwd    string
	n      int
}

// guideShellInit defines guide_run, which runs one block from a file with
// its output in another and reports the exit status, the number of failed
// commands (ERR trap) and the working directory on stdout.
const guideShellInit = `
guide_run() {
  local __guide_fails=0 __guide_status
  set -o pipefail
  trap '__guide_fails=$((__guide_fails+1))' ERR
  source "$1" >"$2" 2>&1 </dev/null
  __guide_status=$?
  trap - ERR
  set +o pipefail
  printf '__GUIDE_DONE__ %d %d %s\n' "$__guide_status" "$__guide_fails" "$PWD"
}
`

// guideNode is one umrouter node of the guide: its directories, ports,
// substitutions and shell.
type guideNode struct {
	n               int
	dir             string
	tls, tcp, admin string // 127.0.0.1:port
	env             []string
	subst, unsubst  *strings.Replacer
	sh              *guideShell
	daemon          *guideProc
	files           map[string]string // guide path -> guide-level content
}

// guideRun is one run of the guide.
type guideRun struct {
	t      *testing.T
	repo   string
	root   string
	bin    string
	home   string
	sip    string // the stand-in UM server's port
	nodes  map[int]*guideNode
	procs  []*guideProc
	blocks int
	hooks  map[string]func(*guideBlock)
	tails  bool // a failure message showed the daemon's log already
}

func guideFreePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func guideFreeUDPPort(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, port, _ := net.SplitHostPort(c.LocalAddr().String())
	return port
}

// TestGuideRunsAsWritten performs docs/deployment-guide.md. With
// UMROUTER_GUIDE_SHOW=1 (and -v) it logs what every command printed: what
// to paste when a guide-output block must change.
func TestGuideRunsAsWritten(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the deployment guide: builds the binary, starts three daemons and SIPp")
	}
	for _, tool := range []string{"bash", "go", "openssl", "curl", "sipp"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (bash .ci/run installs the test peers)", tool)
		}
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(repo, "docs", "deployment-guide.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := parseGuide(string(md))
	if err != nil {
		t.Fatalf("docs/deployment-guide.md: %v", err)
	}
	g := newGuideRun(t, repo, string(md))
	for _, b := range blocks {
		switch b.kind {
		case "file", "update":
			g.writeFile(b)
		case "sh":
			if b.has("background") {
				g.background(b)
			} else {
				g.runBlock(b)
			}
		default:
			continue
		}
		if hook := g.hooks[b.attrs["id"]]; hook != nil {
			hook(b)
		}
	}
	if g.blocks < 40 {
		t.Errorf("only %d command blocks ran: is the guide's markup intact?", g.blocks)
	}
	for id := range g.hooks {
		if !strings.Contains(string(md), "id="+id) {
			t.Errorf("the guide no longer has a block id=%s that this test checks", id)
		}
	}
	g.finish()
}

func newGuideRun(t *testing.T, repo, md string) *guideRun {
	root := t.TempDir()
	g := &guideRun{
		t: t, repo: repo, root: root,
		bin:   filepath.Join(root, "bin"),
		home:  filepath.Join(root, "home"),
		sip:   guideFreeUDPPort(t),
		nodes: map[int]*guideNode{},
	}
	for _, d := range []string{g.bin, g.home, filepath.Join(root, "blocks")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The shells get a home of their own (the guide works in
	// ~/umrouter-setup), but the Go caches of this machine: the install
	// step must not rebuild the world.
	goEnv := map[string]string{}
	out, err := exec.Command("go", "env", "-json", "GOCACHE", "GOMODCACHE", "GOPATH").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	if err := json.Unmarshal(out, &goEnv); err != nil {
		t.Fatalf("go env: %v", err)
	}
	for n := 1; n <= guideNodes; n++ {
		g.nodes[n] = &guideNode{
			n: n, dir: filepath.Join(root, fmt.Sprintf("um%d", n)),
			tls:   "127.0.0.1:" + guideFreePort(t),
			tcp:   "127.0.0.1:" + guideFreePort(t),
			admin: "127.0.0.1:" + guideFreePort(t),
			files: map[string]string{},
		}
	}
	var resolve []string
	resolve = append(resolve, "umrouter.contoso.com:5061="+g.nodes[1].tls, "umrouter.contoso.com:5060="+g.nodes[1].tcp)
	for n := 1; n <= guideNodes; n++ {
		resolve = append(resolve, fmt.Sprintf("um%d.contoso.com:5061=%s", n, g.nodes[n].tls))
	}
	var base []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "HOME", "PATH", "UMROUTER_CERT_PASSWORD", "STATE_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC",
			"TEST_CALL_RESOLVE", "GOCACHE", "GOMODCACHE", "GOPATH", "LC_ALL", "REPO", "XDG_STATE_HOME":
		default:
			base = append(base, kv)
		}
	}
	base = append(base, "HOME="+g.home, "PATH="+g.bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"REPO="+repo, "LC_ALL=C", "TEST_CALL_RESOLVE="+strings.Join(resolve, " "),
		"GOCACHE="+goEnv["GOCACHE"], "GOMODCACHE="+goEnv["GOMODCACHE"], "GOPATH="+goEnv["GOPATH"])

	for n := 1; n <= guideNodes; n++ {
		node := g.nodes[n]
		node.env = base
		pairs := []string{
			"/usr/local/bin/umrouter", filepath.Join(g.bin, "umrouter"),
			"/etc/umrouter", filepath.Join(node.dir, "etc"),
			"/var/lib/umrouter", filepath.Join(node.dir, "state"),
			"0.0.0.0:5061", node.tls,
			"0.0.0.0:5060", node.tcp,
			"127.0.0.1:9090", node.admin,
			"127.0.0.1:5070", "127.0.0.1:" + g.sip,
			"-p 5070", "-p " + g.sip,
			"192.0.2.20", "127.0.0.1",
			"-connect umrouter.contoso.com:5061", "-connect " + g.nodes[1].tls,
		}
		for m := 1; m <= guideNodes; m++ {
			pairs = append(pairs, fmt.Sprintf("-connect um%d.contoso.com:5061", m), "-connect "+g.nodes[m].tls)
		}
		node.subst = strings.NewReplacer(pairs...)
		node.unsubst = strings.NewReplacer(
			filepath.Join(g.bin, "umrouter"), "/usr/local/bin/umrouter",
			filepath.Join(node.dir, "etc"), "/etc/umrouter",
			filepath.Join(node.dir, "state"), "/var/lib/umrouter",
			node.admin, "127.0.0.1:9090",
			"127.0.0.1:"+g.sip, "127.0.0.1:5070",
		)
		if n == 1 {
			// A value the guide no longer mentions means the guide and
			// this test have drifted apart (the node names are optional).
			for i := 0; i < len(pairs); i += 2 {
				if !strings.Contains(md, pairs[i]) && !strings.HasPrefix(pairs[i], "-connect um") {
					t.Errorf("the guide no longer contains %q, which this test replaces", pairs[i])
				}
			}
		}
	}
	t.Cleanup(g.cleanup)
	g.hooks = map[string]func(*guideBlock){
		"first-start":  g.checkFirstStart,
		"enabled":      g.checkEnabled,
		"secured-call": g.checkSecuredCall,
		"cluster-um2":  func(*guideBlock) { g.checkSameCertificate(1, 2) },
		"cluster-um3":  func(*guideBlock) { g.checkSameCertificate(1, 3) },
	}
	return g
}

// where names a block in messages.
func guideWhere(b *guideBlock) string {
	return fmt.Sprintf("docs/deployment-guide.md:%d (node um%d)", b.line, b.node())
}

func (g *guideRun) shell(n int) *guideShell {
	node := g.nodes[n]
	if node == nil {
		g.t.Fatalf("the guide names node %d; the test runs %d", n, guideNodes)
	}
	if node.sh != nil {
		return node.sh
	}
	cwd := g.home
	if n != 1 && g.nodes[1].sh != nil {
		// Another machine, where the files of the shared scratch
		// directory have been copied (the guide says so).
		cwd = g.nodes[1].sh.cwd
	}
	cmd := exec.Command("bash", "--noprofile", "--norc")
	cmd.Dir = cwd
	cmd.Env = node.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		g.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		g.t.Fatal(err)
	}
	sh := &guideShell{cmd: cmd, stdin: stdin, marks: make(chan string, 1), stderr: &guideBuffer{}, cwd: cwd, n: n}
	cmd.Stderr = sh.stderr
	if err := cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "__GUIDE_DONE__ ") {
				sh.marks <- sc.Text()
			}
		}
		close(sh.marks)
	}()
	if _, err := io.WriteString(stdin, guideShellInit); err != nil {
		g.t.Fatal(err)
	}
	node.sh = sh
	return sh
}

// exec runs one block's script in the shell and returns its output, exit
// status and the number of commands that failed in it.
func (g *guideRun) exec(b *guideBlock, script string, timeout time.Duration) (string, int, int) {
	sh := g.shell(b.node())
	g.blocks++
	base := filepath.Join(g.root, "blocks", fmt.Sprintf("%04d-line%d", g.blocks, b.line))
	if err := os.WriteFile(base+".sh", []byte(script), 0o600); err != nil {
		g.t.Fatal(err)
	}
	if _, err := fmt.Fprintf(sh.stdin, "guide_run %s %s\n", shellQuote(base+".sh"), shellQuote(base+".out")); err != nil {
		g.t.Fatalf("%s: the shell is gone: %v\n%s", guideWhere(b), err, sh.stderr.String())
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var mark string
	select {
	case m, ok := <-sh.marks:
		if !ok {
			g.t.Fatalf("%s: the shell exited:\n%s", guideWhere(b), sh.stderr.String())
		}
		mark = m
	case <-timer.C:
		out, _ := os.ReadFile(base + ".out")
		_ = syscall.Kill(-sh.cmd.Process.Pid, syscall.SIGKILL)
		g.t.Fatalf("%s: still running after %v:\n%s\n--- output so far\n%s", guideWhere(b), timeout, script, out)
	}
	f := strings.SplitN(mark, " ", 4)
	status, _ := strconv.Atoi(f[1])
	fails, _ := strconv.Atoi(f[2])
	if len(f) == 4 {
		sh.cwd = f[3]
	}
	out, err := os.ReadFile(base + ".out")
	if err != nil {
		g.t.Fatal(err)
	}
	return g.nodes[b.node()].unsubst.Replace(string(out)), status, fails
}

// runBlock runs a command block and checks its exit status and output,
// retrying a `retry` block until it passes or its window closes.
func (g *guideRun) runBlock(b *guideBlock) {
	node := g.nodes[b.node()]
	script := node.subst.Replace(b.text)
	wantExit, _ := strconv.Atoi(b.attrs["exit"])
	deadline := time.Now().Add(guideRetryWindow)
	for attempt := 1; ; attempt++ {
		out, status, fails := g.exec(b, script, guideBlockTimeout)
		problem := ""
		switch {
		case status != wantExit:
			problem = fmt.Sprintf("exit status %d, want %d", status, wantExit)
		case wantExit == 0 && fails > 0:
			problem = fmt.Sprintf("%d command(s) failed", fails)
		case b.output != nil:
			if ok, missing := guideMatch(b.output.text, out); !ok {
				problem = fmt.Sprintf("the output lacks the line %q (or has it out of order)", missing)
			}
		}
		if problem == "" {
			g.t.Logf("%s: ok%s", guideWhere(b), map[bool]string{true: fmt.Sprintf(" (attempt %d)", attempt)}[attempt > 1])
			if os.Getenv("UMROUTER_GUIDE_SHOW") != "" {
				g.t.Logf("--- command\n%s--- output\n%s", b.text, out)
			}
			return
		}
		if !b.has("retry") || time.Now().After(deadline) {
			g.tails = true
			g.t.Fatalf("%s: %s\n--- command\n%s--- output\n%s--- the guide shows\n%s%s", guideWhere(b), problem, b.text, out, guideOutputText(b), g.daemonTail(b.node()))
		}
		time.Sleep(guidePoll)
	}
}

func guideOutputText(b *guideBlock) string {
	if b.output == nil {
		return "(no output block)\n"
	}
	return b.output.text
}

func (g *guideRun) daemonTail(n int) string {
	d := g.nodes[n].daemon
	if d == nil {
		return ""
	}
	return fmt.Sprintf("--- umrouter on um%d, last lines of its log\n%s\n", n, guideTail(g.nodes[n].unsubst.Replace(d.out.String()), 40))
}

// writeFile writes a configuration block: the whole file, or the sections
// it lists over the node's (or node `from`'s) current version.
func (g *guideRun) writeFile(b *guideBlock) {
	node := g.nodes[b.node()]
	path, content := b.attrs["file"], b.text
	if b.kind == "update" {
		path = b.attrs["update"]
		src := node
		if from, _ := strconv.Atoi(b.attrs["from"]); from != 0 {
			src = g.nodes[from]
		}
		current, ok := src.files[path]
		if !ok {
			g.t.Fatalf("%s: update of %s, which no earlier block wrote on node %d", guideWhere(b), path, src.n)
		}
		content = guideUpdate(current, b.text)
	}
	node.files[path] = content
	real := node.subst.Replace(path)
	if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
		g.t.Fatal(err)
	}
	if err := os.WriteFile(real, []byte(node.subst.Replace(content)), 0o644); err != nil {
		g.t.Fatal(err)
	}
	g.t.Logf("%s: wrote %s", guideWhere(b), path)
}

// background starts a long-running command block (one command, which bash
// replaces itself with) and waits for the output the guide shows under it.
func (g *guideRun) background(b *guideBlock) {
	node := g.nodes[b.node()]
	sh := g.shell(b.node())
	script := node.subst.Replace(b.text)
	words := strings.Fields(script)
	if len(words) == 0 {
		g.t.Fatalf("%s: empty background block", guideWhere(b))
	}
	p := &guideProc{line: b.line, name: filepath.Base(words[0]), out: &guideBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command("bash", "--noprofile", "--norc", "-c", script)
	p.cmd.Dir = sh.cwd
	p.cmd.Env = node.env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.procs = append(g.procs, p)
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	if p.name == "umrouter" && len(words) > 1 && words[1] == "run" {
		node.daemon = p
	}
	// One command, so that stopping the process stops the program: bash
	// execs it, and the process takes the program's name.
	comm := filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "comm")
	want := p.name
	if len(want) > 15 {
		want = want[:15]
	}
	deadline := time.Now().Add(guideStartWindow)
	for {
		c, err := os.ReadFile(comm)
		if err == nil && strings.TrimSpace(string(c)) == want {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			g.t.Fatalf("%s: %s did not start as one command (exited: %v):\n%s", guideWhere(b), p.name, p.exited(), guideTail(p.out.String(), 40))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if b.output == nil {
		g.t.Logf("%s: started %s", guideWhere(b), p.name)
		return
	}
	for {
		ok, missing := guideMatch(b.output.text, node.unsubst.Replace(p.out.String()))
		if ok {
			g.t.Logf("%s: started %s", guideWhere(b), p.name)
			return
		}
		if p.exited() || time.Now().After(deadline) {
			g.t.Fatalf("%s: %s (exited: %v) did not print %q:\n%s", guideWhere(b), p.name, p.exited(), missing, guideTail(p.out.String(), 40))
		}
		time.Sleep(guidePoll)
	}
}

// stop sends SIGTERM, as systemctl stop does, and waits for the exit.
func (g *guideRun) stop(p *guideProc, wait time.Duration) bool {
	if p.exited() {
		return true
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(wait):
		return false
	}
}

// finish ends the guide as an administrator would: the stand-in UM server
// must have survived every call, no call may be left in progress, and each
// daemon stops gracefully.
func (g *guideRun) finish() {
	for n := 1; n <= guideNodes; n++ {
		if g.nodes[n].daemon != nil && !g.nodes[n].daemon.exited() {
			g.settled(n, "at the end of the guide", guideWant{name: "umrouter_calls_active", value: 0})
		}
	}
	for _, p := range g.procs {
		if p.exited() {
			g.t.Errorf("%s (docs/deployment-guide.md:%d) exited during the guide (status %d):\n%s", p.name, p.line, p.code, guideTail(p.out.String(), 30))
		}
	}
	for n := 1; n <= guideNodes; n++ {
		d := g.nodes[n].daemon
		if d == nil {
			g.t.Errorf("the guide never started umrouter on node um%d", n)
			continue
		}
		if !g.stop(d, 30*time.Second) {
			g.t.Errorf("umrouter on um%d still running 30 s after SIGTERM:\n%s", n, guideTail(d.out.String(), 30))
			continue
		}
		if d.code != 0 || !strings.Contains(d.out.String(), `"msg":"stopped"`) {
			g.t.Errorf("umrouter on um%d: exit status %d after SIGTERM, want 0 and a stop line:\n%s", n, d.code, guideTail(d.out.String(), 30))
		}
	}
}

func (g *guideRun) cleanup() {
	for i := len(g.procs) - 1; i >= 0; i-- {
		p := g.procs[i]
		if !g.stop(p, 20*time.Second) {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	for _, node := range g.nodes {
		if node.sh == nil {
			continue
		}
		_ = node.sh.stdin.Close()
		done := make(chan struct{})
		go func() { _ = node.sh.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-node.sh.cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	if g.t.Failed() && !g.tails {
		for n := 1; n <= guideNodes; n++ {
			if tail := g.daemonTail(n); tail != "" {
				g.t.Log(tail)
			}
		}
	}
}

// The checks below look at the same facts as the guide's "how to check"
// lines, through the structured interfaces (JSON, a TLS handshake of our
// own), so that a check the guide shows cannot pass by accident.

// certs lists a node's store with the binary the guide installed.
func (g *guideRun) certs(n int) []tlsmgr.CertInfo {
	out, err := exec.Command(filepath.Join(g.bin, "umrouter"), "cert", "list", "--json",
		"--state-dir", filepath.Join(g.nodes[n].dir, "state")).Output()
	if err != nil {
		g.t.Fatalf("cert list --json on um%d: %v", n, err)
	}
	var l struct {
		Certificates []tlsmgr.CertInfo `json:"certificates"`
	}
	if err := json.Unmarshal(out, &l); err != nil {
		g.t.Fatalf("cert list --json on um%d: %v\n%s", n, err, out)
	}
	return l.Certificates
}

func (g *guideRun) active(n int) tlsmgr.CertInfo {
	for _, c := range g.certs(n) {
		if c.Active {
			return c
		}
	}
	g.t.Fatalf("no active certificate in um%d's store", n)
	return tlsmgr.CertInfo{}
}

// presented is the thumbprint of the certificate node n presents to gw1.
func (g *guideRun) presented(n int) string {
	work := g.nodes[1].sh.cwd
	cert, err := tls.LoadX509KeyPair(filepath.Join(work, "gw1.contoso.com.crt"), filepath.Join(work, "gw1.contoso.com.key"))
	if err != nil {
		g.t.Fatal(err)
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", g.nodes[n].tls, &tls.Config{
		ServerName: "umrouter.contoso.com", Certificates: []tls.Certificate{cert},
		InsecureSkipVerify: true, // only the presented certificate is looked at
	})
	if err != nil {
		g.t.Fatalf("TLS to um%d: %v", n, err)
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].Raw)
	return hex.EncodeToString(sum[:])
}

func (g *guideRun) checkFirstStart(b *guideBlock) {
	certs := g.certs(1)
	if len(certs) != 1 || !certs[0].SelfSigned || !certs[0].Active {
		g.t.Fatalf("%s: after the first start the store holds %+v, want one active self-signed certificate", guideWhere(b), certs)
	}
	if got := g.presented(1); got != certs[0].Thumbprint {
		g.t.Errorf("%s: the daemon presents %s, the store's active certificate is %s", guideWhere(b), got, certs[0].Thumbprint)
	}
}

func (g *guideRun) checkEnabled(b *guideBlock) {
	a := g.active(1)
	if a.SelfSigned || a.Issuer != "CN=Contoso Lab Root CA,O=Contoso Lab" || a.Chain != 1 {
		g.t.Fatalf("%s: active certificate %+v, want the one the lab CA signed, with its chain", guideWhere(b), a)
	}
	if got := g.presented(1); got != a.Thumbprint {
		g.t.Errorf("%s: the daemon presents %s, want the enabled %s", guideWhere(b), got, a.Thumbprint)
	}
}

// metrics scrapes a node's /metrics.
func (g *guideRun) metrics(n int) string {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + g.nodes[n].admin + "/metrics")
	if err != nil {
		g.t.Fatalf("/metrics of um%d: %v", n, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatalf("/metrics of um%d: %v", n, err)
	}
	return string(body)
}

// guideSample is one sample of a metric family in /metrics text: every
// sample named name whose labels include all of labels (`k="v"`), summed, so
// that a check does not depend on labels added later.
func guideSample(metrics, name string, labels ...string) float64 {
	sum := 0.0
	for _, l := range strings.Split(metrics, "\n") {
		rest, ok := strings.CutPrefix(l, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		i := strings.LastIndexByte(rest, ' ')
		if i < 0 {
			continue
		}
		series, value := rest[:i], rest[i+1:]
		all := true
		for _, lb := range labels {
			if !strings.Contains(series, lb) {
				all = false
			}
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil && all {
			sum += v
		}
	}
	return sum
}

// guideWant is a metric a check waits for: the sum of name{labels...} is value.
type guideWant struct {
	name   string
	labels []string
	value  float64
}

// settled waits until node n's /metrics shows every want, or fails after a
// deadline: a call's end is counted when its BYE's answer passes, which
// test-call.sh may see a moment before.
func (g *guideRun) settled(n int, what string, want ...guideWant) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := g.metrics(n)
		problem := ""
		for _, w := range want {
			if got := guideSample(m, w.name, w.labels...); got != w.value {
				problem = fmt.Sprintf("%s{%s} is %v, want %v", w.name, strings.Join(w.labels, ","), got, w.value)
				break
			}
		}
		if problem == "" {
			return
		}
		if time.Now().After(deadline) {
			var ours []string
			for _, l := range strings.Split(m, "\n") {
				if strings.HasPrefix(l, "umrouter_calls_active") || strings.HasPrefix(l, "umrouter_responses_total") ||
					strings.HasPrefix(l, "umrouter_requests_total") || strings.HasPrefix(l, "umrouter_backend_up") {
					ours = append(ours, l)
				}
			}
			g.t.Errorf("%s: on um%d, %s 15 s later:\n%s", what, n, problem, strings.Join(ours, "\n"))
			return
		}
		time.Sleep(guidePoll)
	}
}

// checkSecuredCall: every call the guide completed so far reached the UM
// server and ended there (four BYEs answered by it, none left in progress),
// which test-call.sh, on the gateway's side, cannot see.
func (g *guideRun) checkSecuredCall(b *guideBlock) {
	g.settled(1, guideWhere(b),
		guideWant{name: "umrouter_calls_active", value: 0},
		guideWant{name: "umrouter_backend_up", labels: []string{`backend="127.0.0.1:` + g.sip + `"`}, value: 1},
		guideWant{name: "umrouter_requests_total", labels: []string{`gateway="gw1"`, `method="ACK"`}, value: 3},
		guideWant{name: "umrouter_responses_total", labels: []string{`class="2xx"`, `method="BYE"`}, value: 4},
	)
}

func (g *guideRun) checkSameCertificate(a, b int) {
	want := g.active(1).Thumbprint
	for _, n := range []int{a, b} {
		if got := g.presented(n); got != want {
			g.t.Errorf("um%d presents %s, want um1's certificate %s on every node", n, got, want)
		}
	}
}
