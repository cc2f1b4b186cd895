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
	"sync/atomic"
	"syscall"

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

	m := metrics.New()
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

	// SIGHUP is caught before anything answers on the network: once the
	// admin server is up, a reload request can no longer kill the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// runCtx also ends when the admin server fails, so that a daemon whose
	// probes cannot answer is not left running blind.
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	var stopping atomic.Bool
	admin := metrics.NewAdminServer(doc.Admin, m, func() error {
		if stopping.Load() {
			return errors.New("shutting down")
		}
		return srv.ReadyError()
	}, log.Named("admin"))
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

	code := 0
	done := runCtx.Done()
	adminFailed := (<-chan error)(adminDone)
	for proxyDone != nil {
		select {
		case <-proxyReady:
			log.Info("SIP listeners up")
			proxyReady = nil
		case <-hup:
			doc = d.reload(doc, srv, certs, m, log)
		case err := <-adminFailed:
			log.Error("admin server failed, stopping", zap.Error(err))
			adminFailed, adminDone = nil, nil
			code = 1
			cancelRun()
		case <-done:
			stopping.Store(true)
			log.Info("stopping: no new connections, draining in-flight transactions")
			done = nil
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
	stopAdmin()
	if adminDone != nil {
		if err := <-adminDone; err != nil {
			log.Error("admin server", zap.Error(err))
		}
	}
	log.Info("stopped", zap.Int("exit_code", code))
	return code
}

// reload is the SIGHUP path: re-read and validate the configuration, apply
// what a running proxy can take (gateways, dial plans, backends, startup
// mode), reload the certificates. Each part is independent and counted in
// umrouter_reloads_total{kind,result} (certificates through tlsmgr's reload
// hook); a failure leaves the running state exactly as it was. It returns
// the document now in force.
//
// Sections that only a restart applies (node_name, advertise, tls file
// paths, admin, log, limits, listen.udp/dtls) are named in a warning; the
// proxy refuses a change of the ones it depends on, and then nothing of the
// new file is applied.
func (d *daemon) reload(running *document, srv *proxy.Server, certs *tlsmgr.Manager, m *metrics.Metrics, log *zap.Logger) *document {
	log.Info("SIGHUP: reloading configuration and certificates")
	next := running
	switch doc, problems := d.load(); {
	case d.file == "":
		log.Info("configuration: running on the built-in default, nothing to re-read")
	case problems != nil:
		for _, p := range problems {
			log.Error("configuration reload refused, the running configuration stays in force", zap.String("problem", p))
		}
		m.Reloads.WithLabelValues("config", "error").Inc()
	default:
		changed := changedSections(running, doc)
		if len(changed) == 0 {
			log.Info("configuration unchanged", zap.String("config", d.file))
			m.Reloads.WithLabelValues("config", "ok").Inc()
			break
		}
		if err := srv.Apply(doc.Config, doc.DialPlans); err != nil {
			log.Error("configuration reload refused, the running configuration stays in force",
				zap.String("config", d.file), zap.Strings("sections", changed), zap.Error(err))
			m.Reloads.WithLabelValues("config", "error").Inc()
			break
		}
		if restart := restartOnly(changed); len(restart) > 0 {
			log.Warn("configuration applied except sections that need a restart",
				zap.String("config", d.file), zap.Strings("sections", restart))
		} else {
			log.Info("configuration applied", zap.String("config", d.file), zap.Strings("sections", changed))
		}
		m.Reloads.WithLabelValues("config", "ok").Inc()
		next = doc
	}

	// Counted by the hook installed in run; tlsmgr logs a success itself.
	if err := certs.Reload(); err != nil {
		log.Error("certificate reload refused, the current certificate stays in force", zap.Error(err))
	}
	return next
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
