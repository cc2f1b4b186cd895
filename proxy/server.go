package proxy

import (
	"context"
	"crypto/tls"
	"errors"

	"go.uber.org/zap"

	"github.com/umrouter/umrouter/dialplan"
	"github.com/umrouter/umrouter/metrics"
)

// Certificates is what the proxy needs from the certificate manager
// (tlsmgr.Manager): TLS configurations that always use the current material,
// so that a reload applies to the next handshake without touching listeners.
type Certificates interface {
	// ServerConfig is the mutual-TLS configuration for gateway-facing listeners.
	ServerConfig() *tls.Config
	// ClientConfig is the configuration for dialing serverName (a backend or a
	// gateway), presenting our certificate as client certificate.
	ClientConfig(serverName string) *tls.Config
	// SelfSigned reports whether our active certificate is self-signed.
	SelfSigned() bool
}

// Server is a running SIP proxy. Create it with New, start it with Run.
type Server struct {
	cfg   Config
	plans dialplan.Plans
	certs Certificates
	m     *metrics.Metrics
	log   *zap.Logger
}

// New checks cfg (SetDefaults must have been applied) and prepares a Server.
// It opens no socket: Run does.
func New(cfg Config, plans dialplan.Plans, certs Certificates, m *metrics.Metrics, log *zap.Logger) (*Server, error) {
	if err := cfg.Validate(plans).Err(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, plans: plans, certs: certs, m: m, log: log}, nil
}

// Run binds the listeners and serves until ctx is cancelled; it then stops
// accepting, lets in-flight transactions finish (up to the drain timeout) and
// returns nil. It returns an error at once if a listener cannot be bound.
// ready, when not nil, is closed once every listener is bound.
func (s *Server) Run(ctx context.Context, ready chan<- struct{}) error {
	return errors.New("not implemented yet")
}

// Ready reports whether the listeners are up and at least one backend is usable.
func (s *Server) Ready() bool { return false }
