package tlsmgr

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/pion/dtls/v3"
)

// DTLSServerConfig returns the pion/dtls configuration for SIP over DTLS
// listeners: the same certificate, client CA bundle, CRL and checks as
// ServerConfig, read from the current snapshot at every handshake so that
// Reload applies to the next association.
//
// The check runs in VerifyConnection, which pion calls after the client's
// certificate flight, resumed sessions included. A refusal is a
// *VerifyError, classified by HandshakeFailureReason like a TLS one.
func (m *Manager) DTLSServerConfig() *dtls.Config {
	return &dtls.Config{
		ClientAuth:           dtls.RequireAnyClientCert,
		ExtendedMasterSecret: dtls.RequireExtendedMasterSecret,
		GetCertificate: func(*dtls.ClientHelloInfo) (*tls.Certificate, error) {
			return m.cur.Load().cert, nil
		},
		VerifyConnection: func(st *dtls.State) error {
			certs, err := parseRawChain(st.PeerCertificates)
			if err != nil {
				return &VerifyError{Reason: ReasonOther, Err: err}
			}
			s := m.cur.Load()
			_, err = verifyPeer(certs, s.clientCAs, s.crl, x509.ExtKeyUsageClientAuth, time.Now())
			return err
		},
	}
}

// DTLSPeerCertificates parses the certificates a DTLS peer presented
// (leaf first), for identity extraction.
func DTLSPeerCertificates(st dtls.State) ([]*x509.Certificate, error) {
	return parseRawChain(st.PeerCertificates)
}

func parseRawChain(raw [][]byte) ([]*x509.Certificate, error) {
	if len(raw) == 0 {
		return nil, errors.New("peer presented no certificate")
	}
	certs := make([]*x509.Certificate, 0, len(raw))
	for i, der := range raw {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("peer certificate %d: %w", i, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}
