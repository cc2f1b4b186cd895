package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/umrouter/umrouter/metrics"
	"github.com/umrouter/umrouter/proxy"
	"github.com/umrouter/umrouter/tlsmgr"
)

// builtinName stands for the embedded configuration in messages.
const builtinName = "<built-in default>"

func cmdRun(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	file := fs.String("config", "", "configuration `FILE` (default: the built-in configuration, see `umrouter config default`)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: umrouter run [--config FILE]")
		fs.PrintDefaults()
	}
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	d := &daemon{file: *file, stderr: stderr, env: os.Getenv}
	return d.run(ctx)
}

// daemon is one run of `umrouter run`: it owns the configuration source and
// everything started from it.
type daemon struct {
	file   string // "" for the built-in configuration
	stderr io.Writer
	env    func(string) string
}

func (d *daemon) name() string {
	if d.file == "" {
		return builtinName
	}
	return d.file
}

// load reads and validates the configuration; problems come back formatted
// as FILE:LINE: path: message.
func (d *daemon) load() (*document, []string) {
	data := defaultConfig
	if d.file != "" {
		var err error
		if data, err = os.ReadFile(d.file); err != nil {
			return nil, []string{err.Error()}
		}
	}
	doc, problems := loadConfig(data, d.env)
	if len(problems) == 0 {
		return doc, nil
	}
	msgs := make([]string, len(problems))
	for i, p := range problems {
		msgs[i] = p.format(d.name())
	}
	return nil, msgs
}

// run is the daemon's life: configuration, logger, metrics, certificates,
// proxy, admin server, then serve until ctx is cancelled. It returns the
// process exit code: 0 after a graceful stop, 1 when start-up fails or the
// proxy stops on its own.
//
// A graceful stop (ctx cancelled: SIGTERM, Ctrl-C) has two phases, each
// bounded by limits.drain_timeout: first the node drains (new calls get 503
// with Retry-After, readiness turns false, established calls and
// transactions continue, in-dialog requests still pass) until no call and
// no transaction is left; then the proxy closes its listeners and finishes
// the transactions still in flight.
func (d *daemon) run(ctx context.Context) int {
	doc, problems := d.load()
	if problems != nil {
		// No logger yet: the log section itself may be what is wrong.
		for _, p := range problems {
			fmt.Fprintln(d.stderr, p)
		}
		fmt.Fprintf(d.stderr, "umrouter: %s: invalid configuration, not starting\n", d.name())
		return 1
	}
	log := newLogger(doc.Log, doc.NodeName, d.stderr)
	defer func() { _ = log.Sync() }()
	log.Info("starting", zap.String("version", version), zap.String("config", d.name()),
		zap.String("startup_mode", doc.StartupMode), zap.String("state_dir", doc.TLS.StateDir))
	if len(doc.Gateways) == 0 {
		log.Warn("no gateway configured: every peer is refused until a gateways section is written")
	}
	notify, err := newNotifier(d.env)
	if err != nil {
		log.Warn("systemd notification disabled", zap.Error(err))
	}
	if notify.enabled() {
		log.Info("systemd notification socket found: readiness, reloads and stop will be reported",
			zap.Duration("watchdog_interval", notify.watchdog))
	}

	m := metrics.New()
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	certs, err := tlsmgr.Open(doc.TLS, log.Named("tlsmgr"))
	if err != nil {
		log.Error("certificates unusable, not starting", zap.Error(err))
		return 1
	}
	setNotAfter(m, certs)
	// Every certificate reload, from SIGHUP or from the file watch, is
	// counted here and only here (tlsmgr's contract for the hook).
	certs.SetOnReload(func(err error) {
		if err != nil {
			m.Reloads.WithLabelValues("certificate", "error").Inc()
			return
		}
		setNotAfter(m, certs)
		m.Reloads.WithLabelValues("certificate", "ok").Inc()
	})

	srv, err := proxy.New(doc.Config, doc.DialPlans, certs, m, log.Named("proxy"))
	if err != nil {
		log.Error("proxy configuration refused, not starting", zap.Error(err))
		return 1
	}
	m.SetStateSource(func() metrics.State { return metricsState(srv.Status()) })

	// SIGHUP is caught before anything answers on the network: once the
	// admin server is up, a reload request can no longer kill the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// runCtx is the proxy's life. It is not derived from ctx: a stop
	// request first drains calls (below) and only then ends the proxy. It
	// also ends when the admin server fails, so that a daemon whose probes
	// cannot answer is not left running blind.
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	var stopping atomic.Bool
	ctl := &control{d: d, srv: srv, certs: certs, reloads: make(chan chan reloadResult), stopped: make(chan struct{})}
	ctl.doc.Store(doc)
	admin, err := metrics.NewAdminServer(doc.Admin, m, metrics.AdminOptions{
		Ready: func() error {
			if stopping.Load() {
				return errors.New("shutting down")
			}
			return srv.ReadyError()
		},
		Control:     ctl,
		Certificate: certs.ServerConfig().GetCertificate,
	}, log.Named("admin"))
	if err != nil {
		log.Error("not starting", zap.Error(err))
		return 1
	}
	ctl.admin = admin
	if err := admin.Listen(); err != nil {
		log.Error("not starting", zap.Error(err))
		return 1
	}
	// The admin server outlives the proxy's drain so that /readyz reports
	// "shutting down" and /metrics stays scrapable until the very end.
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	adminDone := make(chan error, 1)
	go func() { adminDone <- admin.Serve(adminCtx) }()

	// Hot reload of replaced certificate files. Without it the daemon still
	// serves, and SIGHUP still reloads, so a failure is a warning.
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		if err := certs.Watch(runCtx); err != nil {
			log.Warn("certificate files are not watched: replace them and send SIGHUP", zap.Error(err))
		}
	}()
	defer func() { cancelRun(); <-watchDone }()

	proxyReady := make(chan struct{})
	proxyDone := make(chan error, 1)
	go func() { proxyDone <- srv.Run(runCtx, proxyReady) }()

	// The watchdog is fed from this loop, not from a goroutine of its own:
	// a loop stuck in a reload stops feeding it, and systemd notices.
	var watchdog <-chan time.Time
	if notify.watchdog > 0 {
		t := time.NewTicker(notify.watchdog)
		defer t.Stop()
		watchdog = t.C
	}
	var drain drainState
	defer drain.stop()

	code := 0
	done := ctx.Done()
	adminFailed := (<-chan error)(adminDone)
	for proxyDone != nil {
		select {
		case <-proxyReady:
			proxyReady = nil
			log.Info("SIP listeners up")
			d.notifyErr(log, notify.ready(serviceStatus(srv)))
		case <-watchdog:
			d.notifyErr(log, notify.ping())
		case <-hup:
			log.Info("SIGHUP: reloading configuration and certificates")
			doc, _ = d.reloadNotified(doc, srv, certs, admin, m, notify, log)
			ctl.doc.Store(doc)
		case reply := <-ctl.reloads:
			log.Info("admin API: reloading configuration and certificates")
			var res reloadResult
			doc, res = d.reloadNotified(doc, srv, certs, admin, m, notify, log)
			ctl.doc.Store(doc)
			reply <- res
		case err := <-adminFailed:
			log.Error("admin server failed, stopping", zap.Error(err))
			adminFailed, adminDone = nil, nil
			code = 1
			cancelRun()
		case <-done:
			done = nil
			stopping.Store(true)
			srv.DrainToStop()
			st := srv.Status()
			log.Info("stopping: new calls are refused; waiting for established calls and transactions to end",
				zap.Int("calls", st.CallsActive), zap.Int("transactions", st.Transactions),
				zap.Duration("drain_timeout", doc.Limits.DrainTimeout))
			d.notifyErr(log, notify.stopping(fmt.Sprintf("stopping: draining %d calls", st.CallsActive)))
			if drained(st) {
				cancelRun()
				break
			}
			drain.start(doc.Limits.DrainTimeout)
		case <-drain.tick:
			if st := srv.Status(); drained(st) {
				log.Info("drained: no call or transaction left")
				drain.stop()
				cancelRun()
			} else {
				d.notifyErr(log, notify.status(fmt.Sprintf("stopping: draining %d calls", st.CallsActive)))
			}
		case <-drain.timeout:
			st := srv.Status()
			log.Warn("drain timeout: stopping with calls still established",
				zap.Int("calls", st.CallsActive), zap.Int("transactions", st.Transactions))
			drain.stop()
			cancelRun()
		case err := <-proxyDone:
			proxyDone = nil
			switch {
			case err != nil:
				log.Error("proxy stopped", zap.Error(err))
				code = 1
			case runCtx.Err() == nil:
				log.Error("proxy stopped without being asked to")
				code = 1
			}
		}
	}
	stopping.Store(true)
	close(ctl.stopped) // before the admin server waits for its requests
	if done != nil {
		// Stopped by a failure rather than a request: systemd still
		// learns that the process is on its way out.
		d.notifyErr(log, notify.stopping("stopping after a failure"))
	}
	stopAdmin()
	if adminDone != nil {
		if err := <-adminDone; err != nil {
			log.Error("admin server", zap.Error(err))
		}
	}
	log.Info("stopped", zap.Int("exit_code", code))
	return code
}

// drainState is the first phase of a graceful stop: a periodic look at the
// proxy's counts, bounded by the drain timeout. Its channels are nil (never
// ready) outside that phase.
type drainState struct {
	ticker  *time.Ticker
	timer   *time.Timer
	tick    <-chan time.Time
	timeout <-chan time.Time
}

func (s *drainState) start(timeout time.Duration) {
	s.ticker = time.NewTicker(100 * time.Millisecond)
	s.timer = time.NewTimer(timeout)
	s.tick, s.timeout = s.ticker.C, s.timer.C
}

func (s *drainState) stop() {
	if s.ticker != nil {
		s.ticker.Stop()
		s.timer.Stop()
	}
	s.tick, s.timeout = nil, nil
}

// drained reports whether nothing is left to wait for.
func drained(st proxy.Status) bool { return st.CallsActive == 0 && st.Transactions == 0 }

// serviceStatus is the line `systemctl status` shows while serving.
func serviceStatus(srv *proxy.Server) string {
	st := srv.Status()
	up := 0
	for _, b := range st.Backends {
		if b.Up {
			up++
		}
	}
	return fmt.Sprintf("serving: %d of %d backends up, %d calls", up, len(st.Backends), st.CallsActive)
}

// notifyErr logs a failed notification: systemd then misses a state
// change (and may kill a daemon whose watchdog it no longer hears), which
// an operator should be able to find in the log.
func (d *daemon) notifyErr(log *zap.Logger, err error) {
	if err != nil {
		log.Warn("systemd notification failed", zap.Error(err))
	}
}

// metricsState is the part of the proxy's status that /metrics publishes
// at scrape time.
func metricsState(st proxy.Status) metrics.State {
	out := metrics.State{Ready: st.Ready, Draining: st.Draining, Backends: make([]metrics.BackendState, len(st.Backends)),
		Handshakes: metrics.HandshakeState(st.Handshakes)}
	for i, b := range st.Backends {
		out.Backends[i] = metrics.BackendState{Address: b.Address, Admin: b.Admin, ActiveCalls: b.ActiveCalls}
	}
	return out
}

// reloadNotified is reload wrapped in systemd's RELOADING=1 ... READY=1,
// with the admin API's credential files re-read too.
func (d *daemon) reloadNotified(running *document, srv *proxy.Server, certs *tlsmgr.Manager, admin *metrics.AdminServer,
	m *metrics.Metrics, notify *notifier, log *zap.Logger) (*document, reloadResult) {
	d.notifyErr(log, notify.reloading())
	next, res := d.reload(running, srv, certs, m, log)
	if running.Admin.Authenticated() {
		res.Admin = &partResult{Result: "ok"}
		if err := admin.Reload(); err != nil {
			log.Error("admin credentials reload refused, the current ones stay in force", zap.Error(err))
			res.Admin = &partResult{Result: "refused", Error: err.Error()}
		}
	}
	d.notifyErr(log, notify.ready(serviceStatus(srv)))
	return next, res
}

// reloadResult is the answer of POST /reload and what `umrouter ctl
// reload` prints: each part of a reload and its outcome.
type reloadResult struct {
	Config      configResult `json:"config"`
	Certificate partResult   `json:"certificate"`
	// Admin is present when the admin API has credential files to re-read.
	Admin *partResult `json:"admin,omitempty"`
}

// configResult is the configuration part of a reload.
type configResult struct {
	// Result is applied, unchanged, refused or builtin (running on the
	// built-in default: nothing to re-read).
	Result string `json:"result"`
	File   string `json:"file"`
	// Sections changed and applied; RestartNeeded are changed sections
	// that only a restart applies.
	Sections      []string `json:"sections,omitempty"`
	RestartNeeded []string `json:"restart_needed,omitempty"`
	// Problems say why the file was refused, as FILE:LINE: path: message.
	Problems []string `json:"problems,omitempty"`
}

// partResult is a part of a reload that either works or not.
type partResult struct {
	Result     string `json:"result"` // ok | refused
	Error      string `json:"error,omitempty"`
	Thumbprint string `json:"thumbprint,omitempty"`
}

// applied reports whether every part of the reload is in force.
func (r reloadResult) applied() bool {
	return r.Config.Result != "refused" && r.Certificate.Result == "ok" && (r.Admin == nil || r.Admin.Result == "ok")
}

// reload is the SIGHUP path: re-read and validate the configuration, apply
// what a running proxy can take (gateways, dial plans, backends, startup
// mode), reload the certificates. Each part is independent and counted in
// umrouter_reloads_total{kind,result} (certificates through tlsmgr's reload
// hook); a failure leaves the running state exactly as it was. It returns
// the document now in force and what happened.
//
// Sections that only a restart applies (node_name, advertise, tls file
// paths, admin, log, limits, listen.udp/dtls) are named in a warning; the
// proxy refuses a change of the ones it depends on, and then nothing of the
// new file is applied.
func (d *daemon) reload(running *document, srv *proxy.Server, certs *tlsmgr.Manager, m *metrics.Metrics, log *zap.Logger) (*document, reloadResult) {
	next := running
	res := reloadResult{Config: configResult{File: d.name()}}
	switch doc, problems := d.load(); {
	case d.file == "":
		log.Info("configuration: running on the built-in default, nothing to re-read")
		res.Config.Result = "builtin"
	case problems != nil:
		for _, p := range problems {
			log.Error("configuration reload refused, the running configuration stays in force", zap.String("problem", p))
		}
		m.Reloads.WithLabelValues("config", "error").Inc()
		res.Config.Result, res.Config.Problems = "refused", problems
	default:
		changed := changedSections(running, doc)
		if len(changed) == 0 {
			log.Info("configuration unchanged", zap.String("config", d.file))
			m.Reloads.WithLabelValues("config", "ok").Inc()
			res.Config.Result = "unchanged"
			break
		}
		if err := srv.Apply(doc.Config, doc.DialPlans); err != nil {
			log.Error("configuration reload refused, the running configuration stays in force",
				zap.String("config", d.file), zap.Strings("sections", changed), zap.Error(err))
			m.Reloads.WithLabelValues("config", "error").Inc()
			res.Config.Result, res.Config.Problems = "refused", []string{d.file + ": " + err.Error()}
			break
		}
		restart := restartOnly(changed)
		if len(restart) > 0 {
			log.Warn("configuration applied except sections that need a restart",
				zap.String("config", d.file), zap.Strings("sections", restart))
		} else {
			log.Info("configuration applied", zap.String("config", d.file), zap.Strings("sections", changed))
		}
		m.Reloads.WithLabelValues("config", "ok").Inc()
		res.Config.Result, res.Config.Sections, res.Config.RestartNeeded = "applied", changed, restart
		next = doc
	}

	// Counted by the hook installed in run; tlsmgr logs a success itself.
	if err := certs.Reload(); err != nil {
		log.Error("certificate reload refused, the current certificate stays in force", zap.Error(err))
		res.Certificate = partResult{Result: "refused", Error: err.Error()}
	} else {
		res.Certificate = partResult{Result: "ok"}
	}
	res.Certificate.Thumbprint = tlsmgr.Thumbprint(certs.Leaf())
	return next, res
}

// restartOnly keeps the sections of changed that a running daemon does not
// apply.
func restartOnly(changed []string) []string {
	var out []string
	for _, s := range changed {
		switch s {
		case "startup_mode", "gateways", "dial_plans", "backends":
		case "listen":
			// listen.tls and listen.tcp are applied; udp and dtls are not,
			// and the proxy refuses a file that changes them.
		default:
			out = append(out, s)
		}
	}
	return out
}

// changedSections names the top-level keys whose values differ between two
// valid documents, in file order.
func changedSections(a, b *document) []string {
	type section struct {
		name string
		a, b any
	}
	sections := []section{
		{"node_name", a.NodeName, b.NodeName},
		{"advertise", a.Advertise, b.Advertise},
		{"startup_mode", a.StartupMode, b.StartupMode},
		{"listen", a.Listen, b.Listen},
		{"tls", a.TLS, b.TLS},
		{"gateways", a.Gateways, b.Gateways},
		{"dial_plans", a.DialPlans, b.DialPlans},
		{"backends", a.Backends, b.Backends},
		{"admin", a.Admin, b.Admin},
		{"log", a.Log, b.Log},
		{"limits", a.Limits, b.Limits},
	}
	var changed []string
	for _, s := range sections {
		if !reflect.DeepEqual(s.a, s.b) {
			changed = append(changed, s.name)
		}
	}
	return changed
}

// setNotAfter publishes each certificate's expiry, so that an alert can fire
// weeks before a gateway starts refusing us.
func setNotAfter(m *metrics.Metrics, certs *tlsmgr.Manager) {
	for role, t := range certs.NotAfter() {
		m.CertificateNotAfter.WithLabelValues(role).Set(float64(t.Unix()))
	}
}

// newLogger builds the process logger from the `log:` section (validated
// before, so the level parses). Every line carries the node name, which is
// what tells nodes apart once their logs are collected together.
func newLogger(c logConfig, node string, w io.Writer) *zap.Logger {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		level = zapcore.InfoLevel
	}
	var enc zapcore.Encoder
	if c.Format == "console" {
		ec := zap.NewDevelopmentEncoderConfig()
		// ISO 8601, not a short clock: the encoder also formats time
		// fields such as a certificate's not_after.
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		ec := zap.NewProductionEncoderConfig()
		ec.TimeKey = "ts"
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	}
	out := zapcore.Lock(zapcore.AddSync(w))
	return zap.New(zapcore.NewCore(enc, out, level), zap.ErrorOutput(out)).With(zap.String("node", node))
}
