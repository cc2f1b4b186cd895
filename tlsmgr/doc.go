// Package tlsmgr owns umrouter's certificate story: the certificate store
// (with the self-signed default created on first start), validation of
// certificates, keys, CA bundles and CRLs, hot reload, the mutual TLS
// server and client configurations, peer identity from certificates
// (RFC 5922) and the classification of handshake failures.
//
// It knows nothing of SIP. The proxy receives tls.Configs whose callbacks
// (GetCertificate, GetConfigForClient, GetClientCertificate,
// VerifyConnection) read the Manager's current snapshot, so the proxy never
// touches files or reload logic, and a reload reaches every listener and
// dialer on its next handshake.
package tlsmgr
