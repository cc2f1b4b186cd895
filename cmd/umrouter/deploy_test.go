package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/umrouter/umrouter/metrics"
)

// These tests keep deploy/ (systemd unit, Dockerfile, Kubernetes manifests,
// alert rules) consistent with the binary they deploy: subcommands, flags,
// ports, paths and metric names, and run the tools each format has.

func repoPath(t *testing.T, parts ...string) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(append([]string{root}, parts...)...)
}

// requireTool returns the path of name, skipping the test when it is
// missing unless CI is "true".
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (Debian package %s); CI=true, so this is a failure", name, pkg)
	}
	t.Skipf("%s not found (Debian package %s; bash .ci/run installs it)", name, pkg)
	return ""
}

// dispatches reports whether `umrouter ARGS --help` is a known command
// line: the subcommand exists and takes those flags.
func dispatches(t *testing.T, args []string) bool {
	t.Helper()
	var out, errb bytes.Buffer
	return run(t.Context(), append(append([]string{}, args...), "--help"), &out, &errb) == 0
}

// defaultDoc is the built-in configuration, parsed.
func defaultDoc(t *testing.T) *document {
	t.Helper()
	doc, problems := loadConfig(defaultConfig, func(string) string { return "" })
	if len(problems) > 0 {
		t.Fatalf("built-in configuration: %v", problems)
	}
	return doc
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// ---- systemd --------------------------------------------------------------

// unitFile reads a systemd unit as (section.Key, values in order).
func unitFile(t *testing.T, path string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, _ := strings.Cut(line, "=")
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	return out
}

func TestSystemdUnitMatchesTheBinaryAndVerifies(t *testing.T) {
	unitPath := repoPath(t, "deploy", "systemd", "umrouter.service")
	u := unitFile(t, unitPath)
	one := func(key string) string {
		t.Helper()
		v := u[key]
		if len(v) == 0 {
			t.Errorf("%s: no %s", unitPath, key)
			return ""
		}
		return v[len(v)-1]
	}
	for key, want := range map[string]string{
		"Service.Type":                    "notify",
		"Service.NotifyAccess":            "main",
		"Service.ExecReload":              "/bin/kill -HUP $MAINPID",
		"Service.StateDirectory":          "umrouter",
		"Service.ConfigurationDirectory":  "umrouter",
		"Service.User":                    "umrouter",
		"Service.NoNewPrivileges":         "yes",
		"Service.ProtectSystem":           "strict",
		"Service.PrivateTmp":              "yes",
		"Service.CapabilityBoundingSet":   "",
		"Service.RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"Service.KillSignal":              "SIGTERM",
	} {
		if got := one(key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if !slices.Contains(u["Service.SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter lacks @system-service: %q", u["Service.SystemCallFilter"])
	}
	// ExecStartPre checks and ExecStart runs the same configuration, in
	// the ConfigurationDirectory, with subcommands this binary has.
	start := strings.Fields(one("Service.ExecStart"))
	pre := strings.Fields(one("Service.ExecStartPre"))
	if len(start) != 4 || start[1] != "run" || start[2] != "--config" || !dispatches(t, start[1:2]) {
		t.Fatalf("ExecStart %q is not `umrouter run --config FILE`", start)
	}
	if len(pre) != 4 || pre[0] != start[0] || pre[1] != "config" || pre[2] != "check" || pre[3] != start[3] {
		t.Errorf("ExecStartPre %q does not check ExecStart's configuration %s", pre, start[3])
	}
	if filepath.Dir(start[3]) != "/etc/"+one("Service.ConfigurationDirectory") {
		t.Errorf("the configuration %s is not in ConfigurationDirectory=%s", start[3], one("Service.ConfigurationDirectory"))
	}
	// A stop drains calls, then transactions, each up to the drain timeout.
	stop, err := time.ParseDuration(one("Service.TimeoutStopSec"))
	if drainTimeout := defaultDoc(t).Limits.DrainTimeout; err != nil || stop <= 2*drainTimeout {
		t.Errorf("TimeoutStopSec=%s must exceed twice the default drain timeout %s", one("Service.TimeoutStopSec"), drainTimeout)
	}
	if wd, err := time.ParseDuration(one("Service.WatchdogSec")); err != nil || wd < 2*time.Second {
		t.Errorf("WatchdogSec=%s", one("Service.WatchdogSec"))
	}

	// systemd's own checks, on a copy naming the binary built from this tree.
	analyze := requireTool(t, "systemd-analyze", "systemd")
	bin := umrouterBinary(t)
	data, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	copyPath := filepath.Join(dir, "umrouter.service")
	if err := os.WriteFile(copyPath, bytes.ReplaceAll(data, []byte(start[0]), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// Exposure score of the hardening: 0 (best) to 10; threshold 20 is 2.0.
	out, err = exec.Command(analyze, "security", "--offline=true", "--threshold=20", copyPath).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: exposure above 2.0: %v\n%s", err, out)
	}

	// The sysusers.d file creates the unit's User and Group.
	sysusers := requireTool(t, "systemd-sysusers", "systemd")
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := os.Open(repoPath(t, "deploy", "systemd", "umrouter.sysusers"))
	if err != nil {
		t.Fatal(err)
	}
	defer conf.Close()
	cmd := exec.Command(sysusers, "--root="+root, "-")
	cmd.Stdin = conf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	group, _ := os.ReadFile(filepath.Join(root, "etc", "group"))
	if !bytes.HasPrefix(passwd, []byte(one("Service.User")+":")) || !bytes.Contains(passwd, []byte("/usr/sbin/nologin")) ||
		!bytes.HasPrefix(group, []byte(one("Service.Group")+":")) {
		t.Errorf("sysusers made:\n%s%s", passwd, group)
	}
}

// ---- Dockerfile -----------------------------------------------------------

type dockerInstruction struct {
	cmd  string // upper case
	args string
}

// dockerfile reads the instructions of a Dockerfile, joining continued lines.
func dockerfile(t *testing.T) []dockerInstruction {
	t.Helper()
	f, err := os.Open(repoPath(t, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []dockerInstruction
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, dockerInstruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// execForm parses a JSON array argument (["/umrouter", "run"]).
func execForm(t *testing.T, s string) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%q is not in exec form (a JSON array): %v", s, err)
	}
	return v
}

// finalStage returns the instructions after the last FROM.
func finalStage(ins []dockerInstruction) (from string, stage []dockerInstruction) {
	for i := len(ins) - 1; i >= 0; i-- {
		if ins[i].cmd == "FROM" {
			return ins[i].args, ins[i+1:]
		}
	}
	return "", nil
}

func TestDockerfileMatchesTheBinary(t *testing.T) {
	all := dockerfile(t)
	from, stage := finalStage(all)
	if !strings.Contains(from, "distroless/static") && from != "scratch" {
		t.Errorf("final stage FROM %s: want distroless static or scratch", from)
	}
	var build string
	for _, in := range all {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			build = in.args
		}
	}
	if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(build, "./cmd/umrouter") {
		t.Errorf("the go build step %q is not a static build of ./cmd/umrouter", build)
	}
	last := map[string]string{}
	var exposed, volumes []string
	var copies []string
	for _, in := range stage {
		last[in.cmd] = in.args
		switch in.cmd {
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "VOLUME":
			volumes = append(volumes, execForm(t, in.args)...)
		case "COPY":
			copies = append(copies, in.args)
		}
	}
	if u := last["USER"]; u == "" || u == "root" || strings.HasPrefix(u, "0") {
		t.Errorf("USER %q: the image must run as a non-root user", u)
	}

	// Ports: the default TLS listener, DTLS on the same port, admin.
	doc := defaultDoc(t)
	tlsPort, adminPort := portOf(t, doc.Listen.TLS), portOf(t, doc.Admin.Listen)
	for _, want := range []string{fmt.Sprintf("%d/tcp", tlsPort), fmt.Sprintf("%d/udp", tlsPort), fmt.Sprintf("%d/tcp", adminPort)} {
		if !slices.Contains(exposed, want) {
			t.Errorf("EXPOSE %q lacks %s", exposed, want)
		}
	}

	// ENTRYPOINT is the binary the build stage copied in.
	entry := execForm(t, last["ENTRYPOINT"])
	if len(entry) != 1 || !slices.ContainsFunc(copies, func(c string) bool { return strings.HasSuffix(c, " "+entry[0]) }) {
		t.Errorf("ENTRYPOINT %q is not the copied binary (COPY %q)", entry, copies)
	}
	cmd := execForm(t, last["CMD"])
	if len(cmd) != 3 || cmd[0] != "run" || cmd[1] != "--config" || !dispatches(t, cmd[:1]) {
		t.Fatalf("CMD %q is not `run --config FILE`", cmd)
	}
	configFile := cmd[2]
	if !slices.Contains(volumes, filepath.Dir(configFile)) {
		t.Errorf("the configuration %s is not in a VOLUME %q", configFile, volumes)
	}
	if !slices.Contains(volumes, "/var/lib/umrouter") || last["ENV"] != "STATE_DIRECTORY=/var/lib/umrouter" {
		t.Errorf("the certificate store is not a volume named by STATE_DIRECTORY: VOLUME %q, ENV %q", volumes, last["ENV"])
	}
	if last["STOPSIGNAL"] != "SIGTERM" {
		t.Errorf("STOPSIGNAL %q, want SIGTERM (graceful drain)", last["STOPSIGNAL"])
	}

	// HEALTHCHECK runs `umrouter health` on the same configuration; run
	// those very arguments against a live daemon, with the configuration
	// path pointing at a test copy.
	hc := last["HEALTHCHECK"]
	_, hcCmd, ok := strings.Cut(hc, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %q has no CMD", hc)
	}
	check := execForm(t, hcCmd)
	if len(check) < 2 || check[0] != entry[0] || check[1] != "health" || !slices.Contains(check, configFile) {
		t.Fatalf("HEALTHCHECK %q is not `%s health --config %s`", check, entry[0], configFile)
	}
	file, adminURL := defaultVariant(t)
	d := startDaemon(t, "run", "--config", file)
	waitFor(t, d, adminURL+"/healthz", func(code int, _ string) bool { return code == 200 })
	args := slices.Clone(check[1:])
	args[slices.Index(args, configFile)] = file
	var out, errb bytes.Buffer
	if code := run(t.Context(), args, &out, &errb); code != 0 || out.String() != "ok\n" {
		t.Errorf("the HEALTHCHECK command %q: exit %d %q %q", args, code, out.String(), errb.String())
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if code := run(t.Context(), args, &out, &errb); code != 1 {
		t.Errorf("the HEALTHCHECK command against a stopped daemon: exit %d, want 1", code)
	}
}

// TestDockerImageBuilds builds the image and runs the binary in it, where a
// Docker daemon is available; it says so plainly and skips otherwise.
func TestDockerImageBuilds(t *testing.T) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Skip("SKIPPED: no docker command on this machine: the image is not built by this run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, docker, "info").CombinedOutput(); err != nil {
		t.Skipf("SKIPPED: no Docker daemon available (docker info: %v: %s): the image is not built by this run",
			err, strings.TrimSpace(lastLineOf(out)))
	}
	tag := fmt.Sprintf("umrouter-test:%d", time.Now().UnixNano())
	build := exec.CommandContext(ctx, docker, "build", "--build-arg", "VERSION=test", "-t", tag, repoPath(t))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(docker, "rmi", "-f", tag).Run() })
	out, err := exec.CommandContext(ctx, docker, "run", "--rm", tag, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "umrouter test ") {
		t.Errorf("docker run %s version: %v %q", tag, err, out)
	}
	out, err = exec.CommandContext(ctx, docker, "image", "inspect", "--format", "{{.Config.User}}", tag).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == "root" {
		t.Errorf("image user %q (%v)", out, err)
	}
}

func lastLineOf(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// ---- Kubernetes -----------------------------------------------------------

// manifest is one YAML document of deploy/kubernetes.
type manifest struct {
	file string
	doc  map[string]any
	raw  []byte
}

func (m manifest) kind() string { s, _ := m.doc["kind"].(string); return s }
func (m manifest) name() string { s, _ := dig(m.doc, "metadata", "name").(string); return s }

// decodeInto re-decodes the document into a typed view.
func (m manifest) decodeInto(t *testing.T, v any) {
	t.Helper()
	if err := yaml.Unmarshal(m.raw, v); err != nil {
		t.Fatalf("%s %s/%s: %v", m.file, m.kind(), m.name(), err)
	}
}

func dig(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// kubernetesManifests parses every document of every YAML file in
// deploy/kubernetes but the kustomization.
func kubernetesManifests(t *testing.T) (map[string][]manifest, map[string]any) {
	t.Helper()
	dir := repoPath(t, "deploy", "kubernetes")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	byKind := map[string][]manifest{}
	var kustomization map[string]any
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			var node yaml.Node
			err := dec.Decode(&node)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			raw, err := yaml.Marshal(&node)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := node.Decode(&doc); err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			m := manifest{file: filepath.Base(f), doc: doc, raw: raw}
			if m.kind() == "Kustomization" {
				kustomization = doc
				continue
			}
			if doc["apiVersion"] == nil || m.kind() == "" || m.name() == "" {
				t.Errorf("%s: document %d lacks apiVersion, kind or metadata.name", f, i)
			}
			byKind[m.kind()] = append(byKind[m.kind()], m)
		}
	}
	if kustomization == nil {
		t.Fatal("no kustomization.yaml")
	}
	return byKind, kustomization
}

type k8sPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Port          int    `yaml:"port"`
	TargetPort    any    `yaml:"targetPort"`
	Protocol      string `yaml:"protocol"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path   string `yaml:"path"`
		Port   string `yaml:"port"`
		Scheme string `yaml:"scheme"`
	} `yaml:"httpGet"`
}

type k8sDeployment struct {
	Spec struct {
		Replicas int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
					RunAsUser    int  `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				Containers []struct {
					Name            string    `yaml:"name"`
					Image           string    `yaml:"image"`
					Command         []string  `yaml:"command"`
					Args            []string  `yaml:"args"`
					Ports           []k8sPort `yaml:"ports"`
					ReadinessProbe  *k8sProbe `yaml:"readinessProbe"`
					LivenessProbe   *k8sProbe `yaml:"livenessProbe"`
					SecurityContext struct {
						AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
						ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
						Capabilities             struct {
							Drop []string `yaml:"drop"`
						} `yaml:"capabilities"`
					} `yaml:"securityContext"`
					VolumeMounts []struct {
						Name      string `yaml:"name"`
						MountPath string `yaml:"mountPath"`
						ReadOnly  bool   `yaml:"readOnly"`
					} `yaml:"volumeMounts"`
				} `yaml:"containers"`
				Volumes []struct {
					Name      string `yaml:"name"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type k8sService struct {
	Metadata struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []k8sPort         `yaml:"ports"`
	} `yaml:"spec"`
}

type k8sCertificate struct {
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		SecretName  string   `yaml:"secretName"`
		DNSNames    []string `yaml:"dnsNames"`
		Usages      []string `yaml:"usages"`
		RenewBefore string   `yaml:"renewBefore"`
		IsCA        bool     `yaml:"isCA"`
		IssuerRef   struct {
			Name string `yaml:"name"`
			Kind string `yaml:"kind"`
		} `yaml:"issuerRef"`
	} `yaml:"spec"`
}

type k8sServiceMonitor struct {
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Endpoints []struct {
			Port          string `yaml:"port"`
			Path          string `yaml:"path"`
			Scheme        string `yaml:"scheme"`
			Authorization struct {
				Type        string `yaml:"type"`
				Credentials struct {
					Name string `yaml:"name"`
					Key  string `yaml:"key"`
				} `yaml:"credentials"`
			} `yaml:"authorization"`
			TLSConfig struct {
				ServerName string `yaml:"serverName"`
				CA         struct {
					Secret struct {
						Name string `yaml:"name"`
						Key  string `yaml:"key"`
					} `yaml:"secret"`
				} `yaml:"ca"`
			} `yaml:"tlsConfig"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// underMount returns the volume mounted at the directory holding file.
func underMount(mounts map[string]string, file string) (volume, key string) {
	for path, vol := range mounts {
		if filepath.Dir(file) == path {
			return vol, filepath.Base(file)
		}
	}
	return "", ""
}

func TestKubernetesManifestsAreConsistentWithTheBinary(t *testing.T) {
	byKind, kust := kubernetesManifests(t)

	// kustomization.yaml lists every manifest file, and only those.
	var listed []string
	for _, r := range dig(kust, "resources").([]any) {
		listed = append(listed, r.(string))
	}
	var onDisk []string
	for _, ms := range byKind {
		for _, m := range ms {
			if !slices.Contains(onDisk, m.file) {
				onDisk = append(onDisk, m.file)
			}
		}
	}
	slices.Sort(listed)
	slices.Sort(onDisk)
	if !slices.Equal(listed, onDisk) {
		t.Errorf("kustomization resources %q, files %q", listed, onDisk)
	}
	for kind, n := range map[string]int{"Namespace": 1, "Issuer": 2, "Certificate": 2, "ConfigMap": 1, "Deployment": 1,
		"Service": 2, "PodDisruptionBudget": 1, "ServiceMonitor": 1, "PrometheusRule": 1} {
		if len(byKind[kind]) != n {
			t.Errorf("%d %s, want %d", len(byKind[kind]), kind, n)
		}
	}

	// The configuration in the ConfigMap passes `umrouter config check`.
	cm := byKind["ConfigMap"][0]
	cmData, _ := dig(cm.doc, "data").(map[string]any)
	if len(cmData) != 1 {
		t.Fatalf("ConfigMap %s: want exactly one key, got %d", cm.name(), len(cmData))
	}
	var cmKey, cfgText string
	for k, v := range cmData {
		cmKey, cfgText = k, v.(string)
	}
	cfgFile := writeFile(t, cmKey, cfgText)
	var out, errb bytes.Buffer
	if code := configCheck(cfgFile, &out, &errb); code != 0 {
		t.Fatalf("config check of the ConfigMap's %s: exit %d\n%s%s", cmKey, code, out.String(), errb.String())
	}
	cfg, _ := loadConfig([]byte(cfgText), func(string) string { return "" })

	// The Deployment.
	var dep k8sDeployment
	byKind["Deployment"][0].decodeInto(t, &dep)
	if dep.Spec.Replicas < 2 {
		t.Errorf("replicas %d, want 2 or more", dep.Spec.Replicas)
	}
	pod := dep.Spec.Template
	if !subset(dep.Spec.Selector.MatchLabels, pod.Metadata.Labels) {
		t.Errorf("the Deployment's selector %v does not select its pods %v", dep.Spec.Selector.MatchLabels, pod.Metadata.Labels)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	// Image: the name kustomize rewrites, with the image's ENTRYPOINT.
	var images []string
	for _, im := range dig(kust, "images").([]any) {
		images = append(images, dig(im, "name").(string))
	}
	if !slices.Contains(images, c.Image) || !strings.Contains(c.Image, "umrouter") {
		t.Errorf("container image %q is not one kustomization.yaml sets (%q)", c.Image, images)
	}
	if len(c.Command) != 0 {
		t.Errorf("command %q overrides the image's ENTRYPOINT", c.Command)
	}
	if len(c.Args) != 3 || c.Args[0] != "run" || c.Args[1] != "--config" || !dispatches(t, c.Args[:1]) {
		t.Fatalf("args %q are not `run --config FILE`", c.Args)
	}

	// Volumes: the ConfigMap holds the --config file, the Secret of the
	// Certificate holds tls.*, a Secret holds the admin token.
	mounts := map[string]string{} // mount path -> volume name
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
		if !m.ReadOnly {
			t.Errorf("volume %s is mounted read-write", m.Name)
		}
	}
	configMaps, secrets := map[string]string{}, map[string]string{} // volume -> object
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			configMaps[v.Name] = v.ConfigMap.Name
		case v.Secret != nil:
			secrets[v.Name] = v.Secret.SecretName
		}
	}
	if vol, key := underMount(mounts, c.Args[2]); configMaps[vol] != cm.name() || key != cmKey {
		t.Errorf("--config %s is not the ConfigMap %s's key %s", c.Args[2], cm.name(), cmKey)
	}
	var cert k8sCertificate
	for _, m := range byKind["Certificate"] {
		var cc k8sCertificate
		m.decodeInto(t, &cc)
		if !cc.Spec.IsCA {
			cert = cc
		}
	}
	for file, key := range map[string]string{cfg.TLS.CertFile: "tls.crt", cfg.TLS.KeyFile: "tls.key", cfg.TLS.ClientCAFile: "ca.crt"} {
		if vol, k := underMount(mounts, file); secrets[vol] != cert.Spec.SecretName || k != key {
			t.Errorf("%s is not key %s of the Certificate's Secret %s", file, key, cert.Spec.SecretName)
		}
	}
	tokenVol, _ := underMount(mounts, cfg.Admin.TokenFile)
	tokenSecret := secrets[tokenVol]
	if tokenSecret == "" {
		t.Errorf("admin.token_file %s is on no Secret volume", cfg.Admin.TokenFile)
	}

	// The certificate names what peers and Prometheus check, works as a
	// TLS client too, and is renewed before the expiry alert fires.
	if !slices.Contains(cert.Spec.DNSNames, cfg.Advertise) {
		t.Errorf("the Certificate's dnsNames %q lack advertise %q", cert.Spec.DNSNames, cfg.Advertise)
	}
	for _, u := range []string{"server auth", "client auth"} {
		if !slices.Contains(cert.Spec.Usages, u) {
			t.Errorf("the Certificate's usages %q lack %q", cert.Spec.Usages, u)
		}
	}
	if rb, err := time.ParseDuration(cert.Spec.RenewBefore); err != nil || rb <= 14*24*time.Hour {
		t.Errorf("renewBefore %q: renewal must start before the 14-day alert", cert.Spec.RenewBefore)
	}
	issuers := map[string]bool{}
	for _, m := range byKind["Issuer"] {
		issuers[m.name()] = true
	}
	if cert.Spec.IssuerRef.Kind != "Issuer" || !issuers[cert.Spec.IssuerRef.Name] {
		t.Errorf("the Certificate's issuer %+v is not defined here", cert.Spec.IssuerRef)
	}

	// Ports: the listeners of the configuration, named.
	ports := map[string]k8sPort{}
	for _, p := range c.Ports {
		ports[p.Name] = p
	}
	for name, want := range map[string]k8sPort{
		"sip-tls":  {ContainerPort: portOf(t, cfg.Listen.TLS), Protocol: "TCP"},
		"sip-dtls": {ContainerPort: portOf(t, cfg.Listen.DTLS), Protocol: "UDP"},
		"admin":    {ContainerPort: portOf(t, cfg.Admin.Listen), Protocol: "TCP"},
	} {
		if p := ports[name]; p.ContainerPort != want.ContainerPort || p.Protocol != want.Protocol {
			t.Errorf("container port %s = %d/%s, want %d/%s", name, p.ContainerPort, p.Protocol, want.ContainerPort, want.Protocol)
		}
	}

	// Probes: readiness and liveness on the admin port, HTTPS since the
	// admin API listens beyond loopback.
	scheme := "HTTP"
	if cfg.Admin.TLS() {
		scheme = "HTTPS"
	}
	for name, tc := range map[string]struct {
		probe *k8sProbe
		path  string
	}{"readiness": {c.ReadinessProbe, "/readyz"}, "liveness": {c.LivenessProbe, "/healthz"}} {
		if tc.probe == nil {
			t.Errorf("no %s probe", name)
			continue
		}
		g := tc.probe.HTTPGet
		if g.Path != tc.path || g.Port != "admin" || g.Scheme != scheme {
			t.Errorf("%s probe %+v, want GET %s on port admin over %s", name, g, tc.path, scheme)
		}
	}

	// A stop drains calls and then transactions, each up to drain_timeout.
	if grace := time.Duration(pod.Spec.TerminationGracePeriodSeconds) * time.Second; grace <= 2*cfg.Limits.DrainTimeout {
		t.Errorf("terminationGracePeriodSeconds %s must exceed twice limits.drain_timeout %s", grace, cfg.Limits.DrainTimeout)
	}

	// The image's user, no privilege.
	sc := c.SecurityContext
	imageUser := 0
	for _, in := range dockerfile(t) {
		if in.cmd == "USER" {
			imageUser, _ = strconv.Atoi(strings.Split(in.args, ":")[0])
		}
	}
	if !pod.Spec.SecurityContext.RunAsNonRoot || pod.Spec.SecurityContext.RunAsUser != imageUser ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !sc.ReadOnlyRootFilesystem ||
		!slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("security context: pod %+v container %+v (image user %d)", pod.Spec.SecurityContext, sc, imageUser)
	}

	// Services target named container ports with their protocols.
	services := map[string]k8sService{}
	for _, m := range byKind["Service"] {
		var s k8sService
		m.decodeInto(t, &s)
		services[s.Metadata.Name] = s
		if !subset(s.Spec.Selector, pod.Metadata.Labels) {
			t.Errorf("Service %s selects %v, not the pods %v", s.Metadata.Name, s.Spec.Selector, pod.Metadata.Labels)
		}
		for _, p := range s.Spec.Ports {
			target, _ := p.TargetPort.(string)
			cp, ok := ports[target]
			if !ok || cp.Protocol != p.Protocol || p.Name != target {
				t.Errorf("Service %s port %+v does not name a container port of its protocol", s.Metadata.Name, p)
			}
		}
	}

	// The PDB keeps a pod while letting one go.
	pdb := byKind["PodDisruptionBudget"][0].doc
	sel := map[string]string{}
	for k, v := range dig(pdb, "spec", "selector", "matchLabels").(map[string]any) {
		sel[k] = v.(string)
	}
	if min, _ := dig(pdb, "spec", "minAvailable").(int); !subset(sel, pod.Metadata.Labels) || min < 1 || min >= dep.Spec.Replicas {
		t.Errorf("PodDisruptionBudget selects %v with minAvailable %v (replicas %d)", sel, dig(pdb, "spec", "minAvailable"), dep.Spec.Replicas)
	}

	// The ServiceMonitor scrapes the admin Service with the token, and
	// verifies the name the certificate carries.
	var sm k8sServiceMonitor
	byKind["ServiceMonitor"][0].decodeInto(t, &sm)
	var adminSvc *k8sService
	for _, s := range services {
		if subset(sm.Spec.Selector.MatchLabels, s.Metadata.Labels) {
			if adminSvc != nil {
				t.Errorf("the ServiceMonitor selects more than one Service")
			}
			adminSvc = &s
		}
	}
	if adminSvc == nil || len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("the ServiceMonitor selects no Service (%v) or has not one endpoint", sm.Spec.Selector.MatchLabels)
	}
	ep := sm.Spec.Endpoints[0]
	if !slices.ContainsFunc(adminSvc.Spec.Ports, func(p k8sPort) bool { return p.Name == ep.Port && p.TargetPort == "admin" }) {
		t.Errorf("ServiceMonitor port %q is not the admin port of Service %s", ep.Port, adminSvc.Metadata.Name)
	}
	if ep.Path != "/metrics" || !strings.EqualFold(ep.Scheme, scheme) {
		t.Errorf("ServiceMonitor scrapes %s %s, want %s /metrics", ep.Scheme, ep.Path, scheme)
	}
	if ep.Authorization.Type != "Bearer" || ep.Authorization.Credentials.Name != tokenSecret || ep.Authorization.Credentials.Key != "token" {
		t.Errorf("ServiceMonitor authorization %+v, want the Bearer token of Secret %s", ep.Authorization, tokenSecret)
	}
	if ep.TLSConfig.CA.Secret.Name != cert.Spec.SecretName || ep.TLSConfig.CA.Secret.Key != "ca.crt" ||
		!slices.Contains(cert.Spec.DNSNames, ep.TLSConfig.ServerName) ||
		!strings.HasPrefix(ep.TLSConfig.ServerName, adminSvc.Metadata.Name+"."+dig(kust, "namespace").(string)+".svc") {
		t.Errorf("ServiceMonitor TLS %+v does not verify the admin Service's name with the Certificate's CA", ep.TLSConfig)
	}

	// The PrometheusRule carries exactly the rules of deploy/prometheus.
	rulesData, err := os.ReadFile(repoPath(t, "deploy", "prometheus", "umrouter.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var plain map[string]any
	if err := yaml.Unmarshal(rulesData, &plain); err != nil {
		t.Fatal(err)
	}
	if got := dig(byKind["PrometheusRule"][0].doc, "spec", "groups"); !reflect.DeepEqual(got, plain["groups"]) {
		t.Errorf("prometheusrule.yaml's groups differ from deploy/prometheus/umrouter.rules.yml")
	}
}

// ---- Prometheus -----------------------------------------------------------

var metricName = regexp.MustCompile(`\b(umrouter_[a-z_]+)\b`)

func TestAlertRulesPassPromtoolAndNameRealMetrics(t *testing.T) {
	dir := repoPath(t, "deploy", "prometheus")
	rules := filepath.Join(dir, "umrouter.rules.yml")
	data, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	// Every metric an expression names is one umrouter declares.
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	families := metrics.New().Families()
	n := 0
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			n++
			for _, m := range metricName.FindAllString(r.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
				if !slices.Contains(families, m) && !slices.Contains(families, base) {
					t.Errorf("alert %s names %s, which umrouter does not export", r.Alert, m)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no rules")
	}

	tool := promtoolPath(t)
	for _, args := range [][]string{
		{"check", "rules", rules},
		{"test", "rules", filepath.Join(dir, "umrouter.rules.test.yml")},
	} {
		cmd := exec.Command(tool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("SUCCESS")) {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
