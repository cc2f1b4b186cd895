package tlsmgr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

func TestHandshakeFailureReasonClassifiesErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"no error", nil, ""},
		{"our VerifyError, wrapped", fmt.Errorf("handshake: %w", &VerifyError{Reason: ReasonRevoked, Err: errors.New("x")}), ReasonRevoked},
		{"deadline exceeded", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, ReasonTimeout},
		{"context deadline", fmt.Errorf("handshake: %w", context.DeadlineExceeded), ReasonTimeout},
		{"x509 unknown authority", x509.UnknownAuthorityError{}, ReasonUnknownCA},
		{"x509 expired", x509.CertificateInvalidError{Reason: x509.Expired, Detail: "current time 2030 is after 2029"}, ReasonExpired},
		{"x509 not yet valid", x509.CertificateInvalidError{Reason: x509.Expired, Detail: "current time 2020 is before 2029"}, ReasonNotYetValid},
		{"x509 usage", x509.CertificateInvalidError{Reason: x509.IncompatibleUsage}, ReasonBadKeyUsage},
		{"server: no client certificate", errors.New("tls: client didn't provide a certificate"), ReasonNoCertificate},
		{"client: certificate required alert", errors.New("remote error: tls: certificate required"), ReasonNoCertificate},
		{"server: old client", errors.New("tls: client offered only unsupported versions: [302 301]"), ReasonProtocolVersion},
		{"client: protocol version alert", errors.New("remote error: tls: protocol version not supported"), ReasonProtocolVersion},
		{"peer: unknown CA alert", errors.New("remote error: tls: unknown certificate authority"), ReasonUnknownCA},
		{"peer: expired alert", errors.New("remote error: tls: expired certificate"), ReasonExpired},
		{"peer: bad certificate alert", errors.New("remote error: tls: bad certificate"), ReasonOther},
		{"anything else", errors.New("EOF"), ReasonOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := HandshakeFailureReason(tt.err); got != tt.want {
				t.Errorf("HandshakeFailureReason(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestSilentPeerHandshakeIsTimeout(t *testing.T) {
	// A peer that connects and says nothing: the server's handshake
	// deadline must read as a timeout, not "other".
	f := newFixture(t)
	m := f.open(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Server(c, m.ServerConfig())
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(50 * time.Millisecond))
	err = tc.Handshake()
	if got := HandshakeFailureReason(err); got != ReasonTimeout {
		t.Errorf("reason = %q (err %v), want timeout", got, err)
	}
}
