package tlsmgr

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strings"
)

// Handshake failure reasons: the labels HandshakeFailureReason returns and
// VerifyError.Reason carries. They are metric label values, so the set is
// closed and small.
const (
	ReasonNoCertificate   = "no_certificate"
	ReasonUnknownCA       = "unknown_ca"
	ReasonExpired         = "expired"
	ReasonNotYetValid     = "not_yet_valid"
	ReasonRevoked         = "revoked"
	ReasonBadKeyUsage     = "bad_key_usage"
	ReasonProtocolVersion = "protocol_version"
	ReasonTimeout         = "timeout"
	ReasonOther           = "other"
)

// VerifyError is the error of a peer certificate refused by the Manager's
// VerifyConnection callbacks. crypto/tls returns it (wrapped) from
// Handshake, so callers can classify a refusal without parsing text.
type VerifyError struct {
	// Reason is one of the Reason* labels.
	Reason string
	// Err says what was wrong with which certificate.
	Err error
}

// Error names the reason and the certificate at fault.
func (e *VerifyError) Error() string {
	return "peer certificate refused (" + e.Reason + "): " + e.Err.Error()
}

// Unwrap returns the underlying cause (often an x509 error).
func (e *VerifyError) Unwrap() error { return e.Err }

// HandshakeFailureReason maps a handshake error to a short label: one of
// no_certificate, unknown_ca, expired, not_yet_valid, revoked,
// bad_key_usage, protocol_version, timeout, other. It returns "" for a nil
// error.
//
// It understands, in this order: a *VerifyError from this package's
// callbacks; timeouts (os.ErrDeadlineExceeded, context deadlines, net.Error
// timeouts); x509 verification errors; and crypto/tls's own errors and
// received alerts, which are only available as text. The text matches are
// pinned by tests, because a Go upgrade may reword them.
func HandshakeFailureReason(err error) string {
	if err == nil {
		return ""
	}
	if ve, ok := errors.AsType[*VerifyError](err); ok {
		return ve.Reason
	}
	if isTimeout(err) {
		return ReasonTimeout
	}
	if r := x509Reason(err); r != "" {
		return r
	}
	return tlsTextReason(err.Error())
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

// x509Reason classifies errors of (*x509.Certificate).Verify; "" when err
// is none of them.
func x509Reason(err error) string {
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return ReasonUnknownCA
	}
	if ci, ok := errors.AsType[x509.CertificateInvalidError](err); ok {
		switch ci.Reason {
		case x509.Expired:
			// x509 uses Expired for both ends of the window; its detail
			// says which ("current time X is before Y").
			if strings.Contains(ci.Detail, "is before") {
				return ReasonNotYetValid
			}
			return ReasonExpired
		case x509.IncompatibleUsage:
			return ReasonBadKeyUsage
		}
		return ReasonOther
	}
	return ""
}

// tlsTextReason classifies crypto/tls errors that have no exported type:
// local failures ("tls: client didn't provide a certificate") and alerts
// received from the peer ("remote error: tls: bad certificate").
func tlsTextReason(msg string) string {
	switch {
	case strings.Contains(msg, "didn't provide a certificate"),
		strings.Contains(msg, "certificate required"):
		return ReasonNoCertificate
	case strings.Contains(msg, "unsupported versions"),
		strings.Contains(msg, "protocol version not supported"),
		strings.Contains(msg, "no mutual version"):
		return ReasonProtocolVersion
	case strings.Contains(msg, "unknown certificate authority"):
		return ReasonUnknownCA
	case strings.Contains(msg, "expired certificate"):
		return ReasonExpired
	case strings.Contains(msg, "revoked certificate"):
		return ReasonRevoked
	}
	return ReasonOther
}
