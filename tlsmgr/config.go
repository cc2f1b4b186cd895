package tlsmgr

import (
	"github.com/umrouter/umrouter/internal/configerr"
)

// Config is the `tls:` section of the configuration.
//
// When CertFile and KeyFile are both empty the certificate comes from the
// store in StateDir; on first start a self-signed certificate is created
// there, as the source product does by default.
type Config struct {
	// StateDir holds the certificate store (and the self-signed default).
	StateDir string `yaml:"state_dir"`
	// CertFile and KeyFile name an explicit certificate (PEM, leaf first,
	// then chain) and key, e.g. a mounted Kubernetes Secret.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile is the PEM bundle of CAs whose certificates may connect.
	// Empty is allowed but trusts nobody: every TLS peer is refused. The
	// system roots are never used; peers come from a private PKI.
	ClientCAFile string `yaml:"client_ca_file"`
	// BackendCAFile is the PEM bundle used to verify backend servers'
	// certificates; empty means ClientCAFile.
	BackendCAFile string `yaml:"backend_ca_file"`
	// CRLFile is an optional PEM or DER CRL checked against peer
	// certificates; it must be signed by a CA of ClientCAFile.
	CRLFile string `yaml:"crl_file"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`

	// Advertise is the host name (or IP address) peers use to reach us,
	// the top-level `advertise` of the configuration, which cmd/umrouter
	// copies here. It is not read from the tls section. When set, a
	// certificate that does not name it is loaded but warned about (see
	// Manager.Warnings): peers that check our name will refuse it.
	Advertise string `yaml:"-"`
}

// Validate reports every problem of the section. Paths are relative to the section.
func (c *Config) Validate() configerr.List {
	var errs configerr.List
	if c.StateDir == "" && c.CertFile == "" {
		errs.Add("state_dir", "required unless cert_file and key_file are set")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs.Add("cert_file", "cert_file and key_file go together")
	}
	switch c.MinVersion {
	case "", "1.2", "1.3":
	default:
		errs.Add("min_version", "must be \"1.2\" or \"1.3\", got %q", c.MinVersion)
	}
	return errs
}
