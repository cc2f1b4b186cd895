package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/umrouter/umrouter/metrics"
	"github.com/umrouter/umrouter/proxy"
	"github.com/umrouter/umrouter/tlsmgr"
)

// control is the daemon as the admin API sees it (metrics.Control). Reads
// go straight to the proxy and the certificate manager, which are safe for
// concurrent use; a reload is handed to the daemon's loop, so that reloads
// from SIGHUP and from the API never overlap.
type control struct {
	d     *daemon
	srv   *proxy.Server
	certs *tlsmgr.Manager
	admin *metrics.AdminServer
	doc   atomic.Pointer[document] // the configuration in force

	reloads chan chan reloadResult // served by the daemon's loop
	stopped chan struct{}          // closed when the loop has ended
}

var errStopping = errors.New("the daemon is stopping: no reload")

// statusDoc is the answer of GET /status and what `umrouter ctl status`
// reads: the proxy's own snapshot, flattened, plus what the daemon knows.
type statusDoc struct {
	proxy.Status
	Version      string       `json:"version"`
	Config       string       `json:"config"`
	Certificates []certStatus `json:"certificates"`
	// Warnings are what a person should fix: certificate problems
	// (tlsmgr.Manager.Warnings) and configuration that refuses every peer.
	Warnings []string `json:"warnings"`
}

// certStatus describes one certificate role: "server" is the node's own
// certificate (presented to gateways and backends, and on the HTTPS admin
// API); "client_ca" and "backend_ca" are the trust bundles, of which only
// the earliest expiry matters to an operator.
type certStatus struct {
	Role       string    `json:"role"`
	Thumbprint string    `json:"thumbprint,omitempty"`
	Subject    string    `json:"subject,omitempty"`
	Issuer     string    `json:"issuer,omitempty"`
	Names      []string  `json:"names,omitempty"`
	NotBefore  time.Time `json:"not_before,omitzero"`
	NotAfter   time.Time `json:"not_after"`
	SelfSigned *bool     `json:"self_signed,omitempty"`
}

func (c *control) Status() any {
	doc := c.doc.Load()
	st := statusDoc{
		Status:   c.srv.Status(),
		Version:  version,
		Config:   c.d.name(),
		Warnings: []string{},
	}
	if st.Gateways == nil {
		st.Gateways = []string{}
	}
	leaf := c.certs.Leaf()
	self := c.certs.SelfSigned()
	st.Certificates = append(st.Certificates, certStatus{
		Role: "server", Thumbprint: tlsmgr.Thumbprint(leaf), Subject: leaf.Subject.String(), Issuer: leaf.Issuer.String(),
		Names: certNames(leaf), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, SelfSigned: &self,
	})
	notAfter := c.certs.NotAfter()
	roles := make([]string, 0, len(notAfter))
	for role := range notAfter {
		if role != "server" {
			roles = append(roles, role)
		}
	}
	sort.Strings(roles)
	for _, role := range roles {
		st.Certificates = append(st.Certificates, certStatus{Role: role, NotAfter: notAfter[role]})
	}

	st.Warnings = append(st.Warnings, c.certs.Warnings()...)
	if self {
		st.Warnings = append(st.Warnings, "the node's certificate is self-signed: Lync peers refuse it, and every gateway must trust it explicitly (umrouter cert export)")
	}
	if doc.TLS.ClientCAFile == "" && doc.StartupMode != "tcp" {
		st.Warnings = append(st.Warnings, "no tls.client_ca_file: every TLS peer is refused")
	}
	if len(doc.Gateways) == 0 {
		st.Warnings = append(st.Warnings, "no gateway configured: every peer is refused")
	}
	return st
}

// certNames lists a certificate's subject alternative names, as a person
// compares them with the host names peers use.
func certNames(c *x509.Certificate) []string {
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	return names
}

func (c *control) Reload(ctx context.Context) (any, bool, error) {
	reply := make(chan reloadResult, 1)
	select {
	case c.reloads <- reply:
	case <-c.stopped:
		return nil, false, errStopping
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	select {
	case res := <-reply:
		return res, res.applied(), nil
	case <-ctx.Done():
		// The reload goes on; only this caller stops waiting for it.
		return nil, false, ctx.Err()
	}
}

func (c *control) Drain() any {
	c.srv.Drain()
	return c.Status()
}

func (c *control) Undrain() (any, error) {
	if err := c.srv.Undrain(); err != nil {
		return nil, err
	}
	return c.Status(), nil
}

func (c *control) SetBackendState(addr, state string) error {
	s, ok := proxy.ParseAdminState(state)
	if !ok {
		return fmt.Errorf("%w %q: use enabled, disabled or no-new-calls", metrics.ErrInvalidState, state)
	}
	if err := c.srv.SetBackendState(addr, s); err != nil {
		return fmt.Errorf("%w: %v", metrics.ErrUnknownBackend, err)
	}
	return nil
}
