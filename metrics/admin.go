package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// shutdownTimeout bounds how long Serve waits for in-flight admin requests
// (a scrape, a health probe) once its context is cancelled; they are short,
// and the daemon's exit must not hang on a slow scraper.
const shutdownTimeout = 5 * time.Second

// AdminServer is the admin HTTP server: /metrics (the Prometheus exposition
// of Metrics.Registry), /healthz (the process is alive) and /readyz (the
// daemon can take calls, as the ready callback decides).
//
// Binding (Listen) and serving (Serve) are separate so that the caller learns
// at start-up, synchronously, that the admin address is taken, and can then
// serve from a goroutine it owns.
type AdminServer struct {
	cfg     Config
	log     *zap.Logger
	handler http.Handler

	mu sync.Mutex
	ln net.Listener
}

// NewAdminServer prepares the admin server of cfg; it opens no socket.
//
// ready is called on every /readyz request, from the HTTP server's
// goroutines, so it must be safe for concurrent use and cheap: nil means
// ready (200 "ok"), an error means not ready (503 with the error's text as
// the body, so that a person running curl learns why). A nil ready function
// means always ready.
func NewAdminServer(cfg Config, m *Metrics, ready func() error, log *zap.Logger) *AdminServer {
	if ready == nil {
		ready = func() error { return nil }
	}
	if log == nil {
		log = zap.NewNop()
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{
		ErrorLog: zap.NewStdLog(log.Named("promhttp")),
		// A failing collector must not hide every other metric from the
		// scraper: serve what could be gathered and log the rest.
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err.Error())
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return &AdminServer{cfg: cfg, log: log, handler: mux}
}

// Handler returns the admin endpoints as an http.Handler, for embedding in
// another server or for tests that need no socket.
func (a *AdminServer) Handler() http.Handler { return a.handler }

// Listen binds cfg.Listen. With an empty cfg.Listen (admin disabled) it
// binds nothing and returns nil. Call it once, before Serve.
func (a *AdminServer) Listen() error {
	if a.cfg.Listen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("admin server: %w", err)
	}
	a.mu.Lock()
	a.ln = ln
	a.mu.Unlock()
	return nil
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
		WriteTimeout:      30 * time.Second, // a scrape of a busy registry stays well under this
		IdleTimeout:       60 * time.Second,
		ErrorLog:          zap.NewStdLog(a.log.Named("http")),
	}
	a.log.Info("admin server listening", zap.Stringer("addr", ln.Addr()))

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
