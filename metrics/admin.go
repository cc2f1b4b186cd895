package metrics

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// shutdownTimeout bounds how long Serve waits for in-flight admin requests
// (a scrape, a health probe) once its context is cancelled; they are short,
// and the daemon's exit must not hang on a slow scraper.
const shutdownTimeout = 5 * time.Second

// Control is what the admin API's /status and write endpoints act on. The
// daemon implements it; the metrics package knows nothing of the proxy.
// Every method is called from the HTTP server's goroutines.
type Control interface {
	// Status returns the JSON document of GET /status.
	Status() any
	// Reload does what SIGHUP does: re-read and apply the configuration,
	// reload the certificates. result is the JSON answer; applied is false
	// when any part was refused (the running state then stays). err means
	// the reload could not be attempted (the daemon is stopping, ctx ended).
	Reload(ctx context.Context) (result any, applied bool, err error)
	// Drain makes the node refuse new calls while established ones
	// continue; it returns the JSON answer (typically the new status).
	Drain() any
	// Undrain ends a drain: new calls are taken again. It returns the JSON
	// answer, or an error when the node is stopping (its drain is the
	// shutdown's and cannot be undone).
	Undrain() (any, error)
	// SetBackendState sets a backend server's administrative state
	// (enabled, disabled, no-new-calls). Errors wrapping ErrUnknownBackend
	// or ErrInvalidState are the caller's mistake (404, 400).
	SetBackendState(addr, state string) error
}

// Errors a Control returns for a caller's mistake.
var (
	ErrUnknownBackend = errors.New("no such backend server")
	ErrInvalidState   = errors.New("invalid state")
)

// AdminOptions are the daemon's hooks into the admin server.
type AdminOptions struct {
	// Ready is called on every /readyz request, from the HTTP server's
	// goroutines, so it must be safe for concurrent use and cheap: nil means
	// ready (200 "ok"), an error means not ready (503 with the error's text
	// as the body, so that a person running curl learns why). A nil Ready
	// means always ready.
	Ready func() error
	// Control serves /status, /reload, /drain, /undrain and /backends/{addr}/state;
	// without it those paths are not served (404).
	Control Control
	// Certificate is the server certificate of the HTTPS admin server (see
	// Config.TLS), called at every handshake: the daemon passes the node's
	// certificate, so a certificate reload applies here too. Required when
	// Config.TLS() is true.
	Certificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// AdminServer is the admin HTTP server:
//
//	GET  /metrics                  Prometheus exposition of Metrics.Registry
//	GET  /healthz                  the process is alive (never authenticated)
//	GET  /readyz                   the node can take calls (never authenticated)
//	GET  /status                   JSON: node, certificates, gateways, backends, counts
//	POST /reload                   what SIGHUP does; 422 when refused
//	POST /drain                    refuse new calls, keep established ones
//	POST /undrain                  take new calls again (503 while stopping)
//	POST /backends/{addr}/state    state=enabled|disabled|no-new-calls (query or form body)
//	     /debug/pprof/             Go's profiler, with Config.Pprof only
//
// Every endpoint but /healthz and /readyz requires the credentials Config
// describes. Binding (Listen) and serving (Serve) are separate so that the
// caller learns at start-up, synchronously, that the admin address is
// taken, and can then serve from a goroutine it owns.
type AdminServer struct {
	cfg     Config
	log     *zap.Logger
	m       *Metrics
	opts    AdminOptions
	handler http.Handler
	creds   atomic.Pointer[credentials]

	mu sync.Mutex
	ln net.Listener
}

// credentials are what Config.ClientCAFile and Config.TokenFile held when
// last read; replaced as a whole by Reload.
type credentials struct {
	clientCAs *x509.CertPool // nil without client_ca_file
	token     []byte         // nil without token_file
}

// NewAdminServer prepares the admin server of cfg; it opens no socket but
// reads the credential files, so that a missing or empty one stops the
// start with a message naming it.
func NewAdminServer(cfg Config, m *Metrics, opts AdminOptions, log *zap.Logger) (*AdminServer, error) {
	if opts.Ready == nil {
		opts.Ready = func() error { return nil }
	}
	if log == nil {
		log = zap.NewNop()
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, fmt.Errorf("admin: %w", errs)
	}
	if cfg.TLS() && opts.Certificate == nil {
		return nil, errors.New("admin: HTTPS needs a server certificate")
	}
	a := &AdminServer{cfg: cfg, log: log, m: m, opts: opts}
	creds, err := readCredentials(cfg)
	if err != nil {
		return nil, err
	}
	a.creds.Store(creds)
	a.handler = a.routes()
	return a, nil
}

// Reload re-reads the credential files (a rotated token, a new admin CA).
// On failure the previous credentials stay in force and the error names the
// file.
func (a *AdminServer) Reload() error {
	creds, err := readCredentials(a.cfg)
	if err != nil {
		return err
	}
	a.creds.Store(creds)
	return nil
}

func readCredentials(cfg Config) (*credentials, error) {
	c := &credentials{}
	if cfg.TokenFile != "" {
		data, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("admin.token_file: %w", err)
		}
		tok := strings.TrimSpace(string(data))
		if tok == "" {
			return nil, fmt.Errorf("admin.token_file %s: empty", cfg.TokenFile)
		}
		if strings.ContainsAny(tok, " \t\r\n") {
			return nil, fmt.Errorf("admin.token_file %s: the token must be one word (no white space inside)", cfg.TokenFile)
		}
		c.token = []byte(tok)
	}
	if cfg.ClientCAFile != "" {
		data, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("admin.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("admin.client_ca_file %s: no PEM certificate in it", cfg.ClientCAFile)
		}
		c.clientCAs = pool
	}
	return c, nil
}

func (a *AdminServer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.protect(promhttp.HandlerFor(a.m.Registry, promhttp.HandlerOpts{
		ErrorLog: zap.NewStdLog(a.log.Named("promhttp")),
		// A failing collector must not hide every other metric from the
		// scraper: serve what could be gathered and log the rest.
		ErrorHandling: promhttp.ContinueOnError,
	})))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := a.opts.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err.Error())
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if c := a.opts.Control; c != nil {
		mux.Handle("GET /status", a.protect(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, c.Status())
		})))
		mux.Handle("POST /reload", a.protect(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			result, applied, err := c.Reload(r.Context())
			switch {
			case err != nil:
				writeError(w, http.StatusServiceUnavailable, err)
			case !applied:
				writeJSON(w, http.StatusUnprocessableEntity, result)
			default:
				writeJSON(w, http.StatusOK, result)
			}
		})))
		mux.Handle("POST /drain", a.protect(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, c.Drain())
		})))
		mux.Handle("POST /undrain", a.protect(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			st, err := c.Undrain()
			if err != nil {
				writeError(w, http.StatusServiceUnavailable, err)
				return
			}
			writeJSON(w, http.StatusOK, st)
		})))
		mux.Handle("POST /backends/{addr}/state", a.protect(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
			state, err := requestedState(r)
			if err != nil {
				writeError(w, http.StatusBadRequest, err)
				return
			}
			addr := r.PathValue("addr")
			switch err := c.SetBackendState(addr, state); {
			case errors.Is(err, ErrUnknownBackend):
				writeError(w, http.StatusNotFound, err)
			case errors.Is(err, ErrInvalidState):
				writeError(w, http.StatusBadRequest, err)
			case err != nil:
				writeError(w, http.StatusInternalServerError, err)
			default:
				a.log.Info("backend state set through the admin API", zap.String("backend", addr),
					zap.String("state", state), zap.String("remote", r.RemoteAddr))
				writeJSON(w, http.StatusOK, map[string]string{"backend": addr, "state": state})
			}
		})))
	}
	if a.cfg.Pprof {
		mux.Handle("/debug/pprof/", a.protect(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/cmdline", a.protect(http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("/debug/pprof/profile", a.protect(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", a.protect(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", a.protect(http.HandlerFunc(pprof.Trace)))
	}
	// A web page open in a browser on this host must not be able to
	// drain the node with a cross-site form POST (CSRF), nor read it by
	// rebinding its own name to 127.0.0.1.
	var h http.Handler = http.NewCrossOriginProtection().Handler(mux)
	if !a.cfg.Authenticated() {
		h = loopbackHostOnly(h)
	}
	return h
}

// requestedState reads state= from the query, a form body, or a JSON body
// {"state": "..."}.
func requestedState(r *http.Request) (string, error) {
	if s := r.URL.Query().Get("state"); s != "" {
		return s, nil
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var body struct {
			State string `json:"state"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			return "", fmt.Errorf("body: %w", err)
		}
		if body.State != "" {
			return body.State, nil
		}
	} else if err := r.ParseForm(); err == nil {
		if s := r.PostForm.Get("state"); s != "" {
			return s, nil
		}
	}
	return "", errors.New("missing state: send state=enabled, disabled or no-new-calls")
}

// protect lets a request through when the caller proved who it is, as
// Config describes; /healthz and /readyz are never wrapped.
func (a *AdminServer) protect(h http.Handler) http.Handler {
	if !a.cfg.Authenticated() {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		creds := a.creds.Load()
		// With client_ca_file, crypto/tls verified any certificate given
		// against it (VerifyClientCertIfGiven): a chain means a good one.
		if creds.clientCAs != nil && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			h.ServeHTTP(w, r)
			return
		}
		reason := "no_credentials"
		if creds.token != nil {
			if tok, ok := bearer(r); ok {
				if subtle.ConstantTimeCompare(tok, creds.token) == 1 {
					h.ServeHTTP(w, r)
					return
				}
				reason = "bad_token"
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="umrouter admin"`)
		}
		a.m.AdminAuthFailures.WithLabelValues(reason).Inc()
		a.log.Warn("admin request refused: no valid credentials", zap.String("reason", reason),
			zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
		writeError(w, http.StatusUnauthorized, errors.New(a.credentialsHint()))
	})
}

func (a *AdminServer) credentialsHint() string {
	switch {
	case a.cfg.ClientCAFile != "" && a.cfg.TokenFile != "":
		return "credentials required: a client certificate issued by the admin CA, or Authorization: Bearer TOKEN"
	case a.cfg.ClientCAFile != "":
		return "credentials required: a client certificate issued by the admin CA"
	default:
		return "credentials required: Authorization: Bearer TOKEN"
	}
}

func bearer(r *http.Request) ([]byte, bool) {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return nil, false
	}
	return []byte(strings.TrimSpace(h[len(prefix):])), true
}

// loopbackHostOnly refuses requests whose Host is not a loopback address
// or localhost: on an unauthenticated loopback server, a browser tricked
// by DNS rebinding would send its attacker's host name there.
func loopbackHostOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		ip, err := netip.ParseAddr(host)
		if !strings.EqualFold(host, "localhost") && (err != nil || !ip.IsLoopback()) {
			writeError(w, http.StatusMisdirectedRequest, fmt.Errorf("host %q: this admin server answers on loopback addresses only", r.Host))
			return
		}
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// Handler returns the admin endpoints as an http.Handler, for embedding in
// another server or for tests that need no socket.
func (a *AdminServer) Handler() http.Handler { return a.handler }

// Listen binds cfg.Listen, with TLS when Config.TLS says so. With an empty
// cfg.Listen (admin disabled) it binds nothing and returns nil. Call it
// once, before Serve.
func (a *AdminServer) Listen() error {
	if a.cfg.Listen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("admin server: %w", err)
	}
	if a.cfg.TLS() {
		ln = tls.NewListener(ln, a.tlsConfig())
	}
	a.mu.Lock()
	a.ln = ln
	a.mu.Unlock()
	return nil
}

// tlsConfig serves the node's certificate and, with client_ca_file, asks
// for a client certificate and verifies any given against the admin CAs
// read last (Reload applies to the next handshake). A certificate is asked
// for, not required: a caller with a token, or a health probe, has none.
func (a *AdminServer) tlsConfig() *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: a.opts.Certificate,
	}
	if a.cfg.ClientCAFile == "" {
		return base
	}
	base.ClientAuth = tls.VerifyClientCertIfGiven
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = a.creds.Load().clientCAs
		return c, nil
	}
	return base
}

// Addr is the bound address, or nil before Listen or when the admin server
// is disabled.
func (a *AdminServer) Addr() net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ln == nil {
		return nil
	}
	return a.ln.Addr()
}

// URL is the base URL of the bound server (http:// or https:// and the
// bound address), or "" before Listen or when the admin server is disabled.
func (a *AdminServer) URL() string {
	addr := a.Addr()
	if addr == nil {
		return ""
	}
	if a.cfg.TLS() {
		return "https://" + addr.String()
	}
	return "http://" + addr.String()
}

// Serve answers on the listener bound by Listen until ctx is cancelled, then
// shuts down gracefully: it stops accepting, lets in-flight requests finish
// (up to a few seconds) and returns nil. When nothing was bound (admin
// disabled) it just waits for ctx. Any other return is a serving error.
func (a *AdminServer) Serve(ctx context.Context) error {
	a.mu.Lock()
	ln := a.ln
	a.mu.Unlock()
	if ln == nil {
		<-ctx.Done()
		return nil
	}
	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// A scrape of a busy registry stays well under this; a CPU
		// profile asks for 30 s by default, hence the margin.
		WriteTimeout: 45 * time.Second,
		IdleTimeout:  60 * time.Second,
		ErrorLog:     zap.NewStdLog(a.log.Named("http")),
	}
	a.log.Info("admin server listening", zap.Stringer("addr", ln.Addr()), zap.Bool("tls", a.cfg.TLS()),
		zap.Bool("client_certificates", a.cfg.ClientCAFile != ""), zap.Bool("token", a.cfg.TokenFile != ""))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		// Serve only returns early on a listener failure; ErrServerClosed
		// cannot happen here because nobody else calls Shutdown.
		return fmt.Errorf("admin server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if err != nil {
		// In-flight requests outlived the timeout: cut them off rather than
		// keep the daemon from exiting.
		_ = srv.Close()
	}
	if serveErr := <-served; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("admin server: %w", serveErr)
	}
	a.log.Info("admin server stopped")
	if err != nil {
		return fmt.Errorf("admin server shutdown: %w", err)
	}
	return nil
}

// Run is Listen followed by Serve.
func (a *AdminServer) Run(ctx context.Context) error {
	if err := a.Listen(); err != nil {
		return err
	}
	return a.Serve(ctx)
}
