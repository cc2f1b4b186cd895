package metrics

import (
	"net"
	"net/netip"
	"strings"

	"github.com/umrouter/umrouter/internal/configerr"
)

// Config is the `admin:` section: where the admin HTTP server listens and
// who may use it.
//
// On a loopback address with no credentials configured the server speaks
// plain HTTP and trusts whoever can reach it: only the processes of this
// host can. On any other address it must authenticate its callers, with a
// client certificate issued by ClientCAFile (mutual TLS), a bearer token
// read from TokenFile, or either of the two when both are set; it then
// serves HTTPS with the node's own certificate. A non-loopback address with
// neither is a configuration error: the admin API can drain the node.
//
// /healthz and /readyz answer without credentials in every case: load
// balancers, the kubelet and Docker's HEALTHCHECK probe them, and they tell
// nothing beyond "ok" or why the node is not ready.
type Config struct {
	// Listen is host:port; empty disables the admin server.
	Listen string `yaml:"listen"`
	// ClientCAFile is a PEM bundle of the CAs whose client certificates
	// may use the admin API. Setting it turns on TLS even on loopback.
	ClientCAFile string `yaml:"client_ca_file"`
	// TokenFile holds the bearer token that callers send as
	// "Authorization: Bearer TOKEN" (surrounding white space is ignored).
	TokenFile string `yaml:"token_file"`
	// Pprof serves Go's profiler under /debug/pprof/ (authenticated like
	// the other endpoints). Off by default.
	Pprof bool `yaml:"pprof"`
}

// Validate reports every problem of the section. Paths are relative to the section.
func (c *Config) Validate() configerr.List {
	var errs configerr.List
	if c.Listen == "" {
		return errs
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs.Add("listen", "not host:port: %v", err)
		return errs
	}
	if !c.Loopback() && !c.Authenticated() {
		errs.Add("listen", "%s is not a loopback address: the admin API (reload, drain) must then authenticate its callers; "+
			"set admin.client_ca_file (mutual TLS) or admin.token_file (bearer token), or listen on 127.0.0.1", c.Listen)
	}
	return errs
}

// Loopback reports whether Listen names a loopback address (127.0.0.0/8,
// ::1 or "localhost"), which only processes of this host can reach. An
// empty host ("":9090) or a wildcard listens on every interface.
func (c *Config) Loopback() bool {
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Authenticated reports whether callers of the admin API must present
// credentials.
func (c *Config) Authenticated() bool { return c.ClientCAFile != "" || c.TokenFile != "" }

// TLS reports whether the admin server speaks HTTPS: beyond loopback (a
// token must not cross a network in clear) and whenever client
// certificates are asked for.
func (c *Config) TLS() bool { return c.Listen != "" && (!c.Loopback() || c.ClientCAFile != "") }
