package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validBase is a small valid document; cases below break one thing in it.
const validBase = `node_name: t
advertise: umrouter.example.test
startup_mode: tls
listen:
  tls: 127.0.0.1:5061
tls:
  state_dir: /nonexistent/state
gateways:
  - name: gw1
    address: gw1.example.test
    dial_plan: main
dial_plans:
  - name: main
    security: secured
backends:
  transport: tls
  health: { interval: 5s, timeout: 2s }
  servers:
    - { address: um1.example.test:5061 }
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigCheckReportsEveryProblemAtItsLine(t *testing.T) {
	example := filepath.Join("..", "..", "deploy", "umrouter.example.yaml")
	exampleData, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	demoData, err := os.ReadFile(filepath.Join("..", "..", "deploy", "demo", "umrouter.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		content string
		want    []string // problem lines after "FILE:"; nil means ok
	}{
		{name: "deploy example is accepted", content: string(exampleData)},
		{name: "base document is accepted", content: validBase},
		{name: "README walk-through configuration is accepted", content: string(demoData)},
		{
			name:    "unknown top-level key",
			content: validBase + "colour: blue\n",
			want:    []string{"20: colour: unknown key"},
		},
		{
			name:    "unknown nested key names its path",
			content: strings.Replace(validBase, "    dial_plan: main\n", "    dial_plan: main\n    dialplan: main\n", 1),
			want:    []string{"12: gateways[0].dialplan: unknown key"},
		},
		{
			name:    "gateway dial_plan naming no plan",
			content: strings.Replace(validBase, "    dial_plan: main\n", "    dial_plan: mian\n", 1),
			want:    []string{`11: gateways[0].dial_plan: no dial plan named "mian"`},
		},
		{
			name:    "names that cannot go into a Record-Route parameter",
			content: strings.Replace(strings.Replace(validBase, "  - name: gw1\n", "  - name: gw;1\n", 1), "node_name: t\n", "node_name: t>x\n", 1),
			want: []string{
				`1: node_name: "t>x": only letters, digits and - . _ ~ (it is the user part of umrouter's Record-Route)`,
				`9: gateways[0].name: "gw;1": only letters, digits and - . _ ~ (umrouter's Record-Route carries it)`,
			},
		},
		{
			name:    "bad startup_mode",
			content: strings.Replace(validBase, "startup_mode: tls", "startup_mode: tsl", 1),
			want:    []string{`3: startup_mode: must be tcp, tls or dual, got "tsl"`},
		},
		{
			name:    "several problems, sorted by line",
			content: strings.Replace(strings.Replace(validBase, "startup_mode: tls", "startup_mode: udp", 1), "    security: secured", "    security: safe", 1),
			want: []string{
				`3: startup_mode: must be tcp, tls or dual, got "udp"`,
				`14: dial_plans[0].security: must be unsecured, sip-secured or secured, got "safe"`,
			},
		},
		{
			name:    "missing required key reported at its parent",
			content: strings.Replace(validBase, "    address: gw1.example.test\n", "", 1),
			want:    []string{"9: gateways[0].address: required: the FQDN its certificate names"},
		},
		{
			name:    "missing top-level key reported at the first line",
			content: strings.Replace(validBase, "advertise: umrouter.example.test\n", "", 1),
			want:    []string{"1: advertise: required: the host name written in Via and Record-Route"},
		},
		{
			name:    "wrong type",
			content: strings.Replace(validBase, "    dial_plan: main\n", "    dial_plan: main\n    port: high\n", 1),
			want:    []string{"12: gateways[0].port: cannot unmarshal !!str `high` into int"},
		},
		{
			name:    "duplicate key",
			content: strings.Replace(validBase, "node_name: t\n", "node_name: t\nnode_name: u\n", 1),
			want:    []string{`2: node_name: mapping key "node_name" already defined at line 1`},
		},
		{
			name:    "truncated inside a flow mapping: the line that opened it",
			content: validBase[:strings.Index(validBase, "timeout")],
			want:    []string{"17: syntax error: did not find expected node content"},
		},
		{
			name:    "truncated inside a flow mapping after a value",
			content: validBase[:strings.Index(validBase, ", timeout")],
			want:    []string{"17: syntax error: did not find expected ',' or '}'"},
		},
		{
			name:    "truncated inside a quoted string",
			content: "node_name: t\nadvertise: \"umrouter.exam",
			want:    []string{"2: syntax error: found unexpected end of stream"},
		},
		{
			name:    "truncated after a gateway's first keys",
			content: validBase[:strings.Index(validBase, "    dial_plan: main")],
			want:    []string{"9: gateways[0].dial_plan: required (or hunt_groups)"},
		},
		{
			name:    "empty file",
			content: "",
			want:    []string{"1: empty configuration"},
		},
		{
			name:    "not a mapping",
			content: "- node_name: t\n",
			want:    []string{"1: the configuration must be a mapping of keys (node_name: ..., listen: ...)"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, "umrouter.yaml", tc.content)
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), []string{"config", "check", file}, &stdout, &stderr)

			var want string
			wantCode := 0
			if tc.want == nil {
				want = file + ": ok\n"
			} else {
				wantCode = 1
				for _, w := range tc.want {
					want += file + ":" + w + "\n"
				}
			}
			if code != wantCode || stdout.String() != want {
				t.Errorf("exit %d, output:\n%s\nwant exit %d, output:\n%s\nstderr: %s", code, stdout.String(), wantCode, want, stderr.String())
			}
		})
	}
}

func TestConfigCheckOfMissingFileFails(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"config", "check", filepath.Join(t.TempDir(), "none.yaml")}, &stdout, &stderr); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "no such file") {
		t.Errorf("stderr %q does not say the file is missing", stderr.String())
	}
}

func TestEmbeddedDefaultIsValidAndRefusesEveryPeer(t *testing.T) {
	env := func(k string) string {
		if k == "STATE_DIRECTORY" {
			return "/var/lib/umrouter-test"
		}
		return ""
	}
	doc, problems := loadConfig(defaultConfig, env)
	if len(problems) != 0 {
		t.Fatalf("embedded default has problems: %v", problems)
	}
	if doc.StartupMode != "tls" || doc.Listen.TLS != "0.0.0.0:5061" || doc.Listen.TCP != "" || doc.Listen.UDP != "" {
		t.Errorf("default listeners: startup_mode %q listen %+v, want TLS on 0.0.0.0:5061 only", doc.StartupMode, doc.Listen)
	}
	// The out-of-the-box promise: nobody can route a call until an
	// administrator configures a gateway, and the admin port stays local.
	if len(doc.Gateways) != 0 {
		t.Errorf("default configures gateways %v; it must refuse every peer", doc.Gateways)
	}
	if doc.Admin.Listen != "127.0.0.1:9090" {
		t.Errorf("admin listens on %q, want 127.0.0.1:9090", doc.Admin.Listen)
	}
	if doc.TLS.StateDir != "/var/lib/umrouter-test" {
		t.Errorf("state_dir %q, want $STATE_DIRECTORY", doc.TLS.StateDir)
	}
	if len(doc.Backends.Servers) != 1 || doc.Backends.Servers[0].Address != "127.0.0.1:5070" || doc.Backends.Transport != "udp" {
		t.Errorf("backends %+v, want 127.0.0.1:5070 over udp", doc.Backends)
	}
	if p, ok := doc.DialPlans.Lookup("default"); !ok || p.Security != "unsecured" {
		t.Errorf("dial plan default = %+v, %v", p, ok)
	}
}

func TestConfigDefaultPrintsTheEmbeddedConfiguration(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"config", "default"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !bytes.Equal(stdout.Bytes(), defaultConfig) {
		t.Error("config default does not print default.yaml")
	}
}

func TestDefaultStateDirFollowsTheDocumentedOrder(t *testing.T) {
	envOf := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	if got := defaultStateDir(envOf("STATE_DIRECTORY", "/run/a:/run/b", "HOME", "/home/u")); got != "/run/a" {
		t.Errorf("with $STATE_DIRECTORY: %q, want its first entry /run/a", got)
	}
	if writable("/var/lib/umrouter") {
		t.Skip("/var/lib/umrouter is writable here (root): the per-user fallbacks are not reachable")
	}
	if got := defaultStateDir(envOf("XDG_STATE_HOME", "/x/state", "HOME", "/home/u")); got != "/x/state/umrouter" {
		t.Errorf("with $XDG_STATE_HOME: %q", got)
	}
	if got := defaultStateDir(envOf("XDG_STATE_HOME", "relative", "HOME", "/home/u")); got != "/home/u/.local/state/umrouter" {
		t.Errorf("relative $XDG_STATE_HOME must be ignored (XDG spec): %q", got)
	}
}

func TestWritableLooksAtTheNearestExistingDirectory(t *testing.T) {
	dir := t.TempDir()
	if !writable(filepath.Join(dir, "a", "b")) {
		t.Error("a missing directory under a writable one is not writable")
	}
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if writable(filepath.Join(file, "sub")) {
		t.Error("a path under a regular file is writable")
	}
}

func TestSplitPath(t *testing.T) {
	got := splitPath("gateways[0].hunt_groups[12].pilot")
	want := []segment{{"gateways", -1}, {"", 0}, {"hunt_groups", -1}, {"", 12}, {"pilot", -1}}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("segment %d = %v, want %v", i, got[i], want[i])
		}
	}
}
