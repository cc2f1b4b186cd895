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
//
// The pieces, and who uses them:
//
//   - Manager (Open): the running daemon's material. Reload re-reads it
//     (SIGHUP); Watch re-reads it when its files change, including a
//     Kubernetes Secret's symlink swap and `cert enable` rewriting the
//     store's active pointer. Every reload validates before it swaps and
//     reports to the SetOnReload hook, which is where the command counts
//     reloads: tlsmgr imports no metrics. Warnings lists what an operator
//     should fix (advertise not named, expiry within 30 days, no clientAuth
//     usage).
//   - Store (OpenStore): the certificate store that `umrouter cert` works
//     on: self-signed certificates, requests (CSR) whose keys stay in the
//     store, imports (PEM, DER, PKCS#12), enable, export, remove.
//
// Explicit-file mode (cert_file and key_file, e.g. a mounted Secret) and
// store mode (state_dir) are alternatives; the Manager watches whichever
// is configured.
package tlsmgr
