package dialplan

import "strings"

// Transport is the transport a request actually arrived on: the connection's
// protocol as the proxy knows it, never the sender's claim in Via.
type Transport string

// The transports umrouter listens on.
const (
	TLS  Transport = "tls"
	DTLS Transport = "dtls"
	TCP  Transport = "tcp"
	UDP  Transport = "udp"
)

// Secure reports whether t protects signaling: true for TLS and DTLS,
// compared case-insensitively (so a Via token such as "TLS" works), false for
// everything else, unknown and empty transports included.
func (t Transport) Secure() bool {
	return strings.EqualFold(string(t), string(TLS)) || strings.EqualFold(string(t), string(DTLS))
}
