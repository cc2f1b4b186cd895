package metrics

import (
	"net"

	"github.com/umrouter/umrouter/internal/configerr"
)

// Config is the `admin:` section: where /metrics, /healthz and /readyz are served.
type Config struct {
	// Listen is host:port; empty disables the admin server.
	Listen string `yaml:"listen"`
}

// Validate reports every problem of the section. Paths are relative to the section.
func (c *Config) Validate() configerr.List {
	var errs configerr.List
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			errs.Add("listen", "not host:port: %v", err)
		}
	}
	return errs
}
