package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"gopkg.in/yaml.v3"

	"github.com/umrouter/umrouter/dialplan"
	"github.com/umrouter/umrouter/internal/configerr"
	"github.com/umrouter/umrouter/metrics"
	"github.com/umrouter/umrouter/proxy"
	"github.com/umrouter/umrouter/tlsmgr"
)

// document is the whole configuration file. Each package owns and validates
// its own section; this command only assembles them (DESIGN.md).
type document struct {
	proxy.Config `yaml:",inline"`
	TLS          tlsmgr.Config  `yaml:"tls"`
	DialPlans    dialplan.Plans `yaml:"dial_plans"`
	Admin        metrics.Config `yaml:"admin"`
	Log          logConfig      `yaml:"log"`
}

// logConfig is the `log:` section. The logger is built here, in the command,
// because no package below it should decide where or how logs are written.
type logConfig struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // json | console
}

func (c *logConfig) setDefaults() {
	if c.Level == "" {
		c.Level = "info"
	}
	if c.Format == "" {
		c.Format = "json"
	}
}

func (c *logConfig) validate() configerr.List {
	var errs configerr.List
	switch c.Level {
	case "debug", "info", "warn", "error":
	default:
		errs.Add("level", "must be debug, info, warn or error, got %q", c.Level)
	}
	switch c.Format {
	case "json", "console":
	default:
		errs.Add("format", "must be json or console, got %q", c.Format)
	}
	return errs
}

// setDefaults applies every section's documented defaults, including the
// state directory, which depends on the environment (see defaultStateDir).
func (d *document) setDefaults(env func(string) string) {
	d.Config.SetDefaults()
	d.Log.setDefaults()
	// tlsmgr warns about a certificate that does not name the host peers
	// are told to reach (tlsmgr.Config.Advertise is not read from YAML).
	d.TLS.Advertise = d.Advertise
	// Only the store needs a directory: with explicit cert_file/key_file
	// (a read-only Kubernetes Secret mount) we must not invent one.
	if d.TLS.StateDir == "" && d.TLS.CertFile == "" {
		d.TLS.StateDir = defaultStateDir(env)
	}
}

// validate collects the problems of every section under document paths.
func (d *document) validate() configerr.List {
	var errs configerr.List
	errs.Merge("", d.Config.Validate(d.DialPlans))
	errs.Merge("tls", d.TLS.Validate())
	errs.Merge("dial_plans", d.DialPlans.Validate())
	errs.Merge("admin", d.Admin.Validate())
	errs.Merge("log", d.Log.validate())
	return errs
}

// defaultStateDir decides where the certificate store lives when the
// configuration does not say:
//
//  1. $STATE_DIRECTORY, which systemd sets from StateDirectory= (the unit in
//     deploy/systemd uses it); if it lists several directories, the first;
//  2. /var/lib/umrouter when we may write there (root, or a directory an
//     administrator prepared for the service user);
//  3. $XDG_STATE_HOME/umrouter, else ~/.local/state/umrouter: a developer's
//     `go run ./cmd/umrouter run` works without root.
//
// It only looks: nothing is created here, so `config check` has no side
// effects; tlsmgr creates the directory on first start.
func defaultStateDir(env func(string) string) string {
	if d := env("STATE_DIRECTORY"); d != "" {
		first, _, _ := strings.Cut(d, ":")
		return first
	}
	const system = "/var/lib/umrouter"
	if writable(system) {
		return system
	}
	if x := env("XDG_STATE_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "umrouter")
	}
	if home := env("HOME"); home != "" {
		return filepath.Join(home, ".local", "state", "umrouter")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "umrouter")
	}
	// Nowhere better: the system path, whose failure tlsmgr reports clearly.
	return system
}

// writable reports whether dir is, or could be created as, a directory this
// process may write into: the directory itself if it exists, else its
// nearest existing parent.
func writable(dir string) bool {
	for p := dir; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err == nil {
			return fi.IsDir() && syscall.Access(p, 2 /* W_OK */) == nil
		}
		if !errors.Is(err, os.ErrNotExist) || p == filepath.Dir(p) {
			return false
		}
	}
}

// problem is one configuration problem located in the file.
type problem struct {
	Line int    // 1-based; 0 when unknown
	Path string // document path, e.g. gateways[0].dial_plan; may be empty
	Msg  string
}

// format renders p as `FILE:LINE: path: message`, the form editors and CI
// annotations jump to.
func (p problem) format(file string) string {
	var b strings.Builder
	b.WriteString(file)
	if p.Line > 0 {
		b.WriteString(":" + strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// loadConfig parses data strictly (unknown keys are errors), applies the
// defaults and validates every section. It returns the document and every
// problem found, sorted by line; the document is only meaningful when no
// problem was found.
func loadConfig(data []byte, env func(string) string) (*document, []problem) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, []problem{syntaxProblem(err, lastLine(data))}
	}
	top := documentMapping(&root)
	if top == nil {
		return nil, []problem{{Line: 1, Msg: "empty configuration"}}
	}
	if top.Kind != yaml.MappingNode {
		return nil, []problem{{Line: top.Line, Msg: "the configuration must be a mapping of keys (node_name: ..., listen: ...)"}}
	}

	var doc document
	var problems []problem
	incomplete := false
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&doc)
	var typeErr *yaml.TypeError
	switch {
	case err == nil:
	case errors.As(err, &typeErr):
		// yaml.v3 keeps decoding after unknown keys and type mismatches, so
		// the rest of the document is still worth validating.
		for _, msg := range typeErr.Errors {
			problems = append(problems, decodeProblem(&root, msg))
			if strings.Contains(msg, "already defined at line") {
				// yaml.v3 skips the whole mapping that holds a
				// duplicate key: validating what is left would report
				// phantom "required" problems.
				incomplete = true
			}
		}
	case errors.Is(err, io.EOF):
		return nil, []problem{{Line: 1, Msg: "empty configuration"}}
	default:
		return nil, []problem{syntaxProblem(err, lastLine(data))}
	}

	doc.setDefaults(env)
	if !incomplete {
		for _, e := range doc.validate() {
			problems = append(problems, problem{Line: lineOf(&root, e.Path), Path: e.Path, Msg: e.Msg})
		}
	}
	sort.SliceStable(problems, func(i, j int) bool { return problems[i].Line < problems[j].Line })
	return &doc, problems
}

var (
	lineRe    = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownRe = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
)

// parserProblems are the messages of yaml.v3's parser (as opposed to its
// scanner). yaml.v3 v3.0.1 reports the line of a parser error 0-based (its
// decode.go adds 1 for scanner errors only), so those lines need one added.
// The line is that of the construct being parsed: for a truncated file, the
// flow mapping or block that was never closed.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected <stream-start>":   true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

// syntaxProblem turns a yaml.v3 parse error ("yaml: line 3: did not find
// expected key") into a problem located on a 1-based line, at most last.
// The clamp matters for truncated files: yaml.v3 puts the end of the stream
// on the line after the last one.
func syntaxProblem(err error, last int) problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := lineRe.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if parserProblems[msg] {
		line++ // 0-based in yaml.v3, see parserProblems
	}
	if line > last {
		line = last
	}
	if line < 1 {
		// yaml.v3 leaves the line out when the mark is on the first line.
		line = 1
	}
	return problem{Line: line, Msg: "syntax error: " + msg}
}

// lastLine is the number of the last line of data that has any character.
func lastLine(data []byte) int {
	data = bytes.TrimRight(data, "\n")
	return bytes.Count(data, []byte("\n")) + 1
}

// decodeProblem turns one entry of a yaml.TypeError ("line 5: field foo not
// found in type proxy.Gateway") into a problem with the key's document path,
// and a message that names the mistake in the configuration's own words
// rather than Go's type names.
func decodeProblem(root *yaml.Node, msg string) problem {
	m := lineRe.FindStringSubmatch(msg)
	if m == nil {
		return problem{Msg: msg}
	}
	line, _ := strconv.Atoi(m[1])
	p := problem{Line: line, Msg: m[2]}
	if u := unknownRe.FindStringSubmatch(m[2]); u != nil {
		p.Msg = "unknown key"
		p.Path = pathOfKey(root, line, u[1])
		if p.Path == "" {
			p.Msg = fmt.Sprintf("unknown key %q", u[1])
		}
		return p
	}
	p.Path = pathAtLine(root, line)
	return p
}

// lineOf maps a document path ("gateways[0].dial_plan", "tls.state_dir") to
// the line of its key in the file. When the path does not exist (a required
// key that is missing) it falls back to the line of the nearest existing
// parent, and to the first line of the document for top-level keys.
func lineOf(root *yaml.Node, path string) int {
	n := documentMapping(root)
	if n == nil {
		return 1
	}
	line := n.Line
	for _, seg := range splitPath(path) {
		var key, next *yaml.Node
		if seg.index >= 0 {
			if n.Kind != yaml.SequenceNode || seg.index >= len(n.Content) {
				break
			}
			next = n.Content[seg.index]
		} else {
			if n.Kind != yaml.MappingNode {
				break
			}
			key, next = mappingValue(n, seg.key)
			if next == nil {
				break
			}
		}
		if key != nil {
			line = key.Line
		} else {
			line = next.Line
		}
		n = next
	}
	return line
}

// documentMapping returns the top-level node of the document, nil when
// there is none.
func documentMapping(root *yaml.Node) *yaml.Node {
	if root.Kind == 0 {
		return nil // empty or comments only
	}
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil
		}
		return root.Content[0]
	}
	return root
}

func mappingValue(m *yaml.Node, key string) (k, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

type segment struct {
	key   string
	index int // -1 for a mapping key
}

// splitPath splits "gateways[0].hunt_groups[1].pilot" into its segments.
func splitPath(path string) []segment {
	var segs []segment
	for _, part := range strings.Split(path, ".") {
		for part != "" {
			open := strings.IndexByte(part, '[')
			if open != 0 {
				key := part
				if open > 0 {
					key = part[:open]
				}
				segs = append(segs, segment{key: key, index: -1})
				if open < 0 {
					break
				}
				part = part[open:]
				continue
			}
			end := strings.IndexByte(part, ']')
			if end < 0 {
				break
			}
			i, err := strconv.Atoi(part[1:end])
			if err != nil {
				break
			}
			segs = append(segs, segment{index: i})
			part = part[end+1:]
		}
	}
	return segs
}

// walk calls visit for every mapping key and sequence item of n with its
// document path; for a mapping key, key is the key node.
func walk(n *yaml.Node, path string, visit func(path string, key, value *yaml.Node)) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walk(c, path, visit)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			visit(p, k, v)
			walk(v, p, visit)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			visit(p, nil, c)
			walk(c, p, visit)
		}
	}
}

// pathOfKey finds the document path of the mapping key name written at line.
func pathOfKey(root *yaml.Node, line int, name string) string {
	found := ""
	walk(root, "", func(path string, key, _ *yaml.Node) {
		if found == "" && key != nil && key.Line == line && key.Value == name {
			found = path
		}
	})
	return found
}

// pathAtLine finds the document path of the deepest key or value that starts
// at line, for decode errors that name only a line.
func pathAtLine(root *yaml.Node, line int) string {
	found := ""
	walk(root, "", func(path string, key, value *yaml.Node) {
		if (key != nil && key.Line == line) || (value.Line == line && value.Kind == yaml.ScalarNode) {
			found = path
		}
	})
	return found
}
