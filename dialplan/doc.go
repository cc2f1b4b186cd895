// Package dialplan holds dial plans and their security modes, and makes the
// decisions that follow from them: may this request pass, over this
// transport, to this Request-URI, with this SDP. Every decision is a pure
// function of plain values (strings, bytes, a Plan): no sockets, no TLS, no
// clocks, no SIP library. The proxy maps its parsed messages onto Request and
// applies the Decision it gets back.
//
// # Decisions
//
//	rule                                          code  Reason
//	sip-secured/secured plan, not over TLS/DTLS   403   tls_required
//	Request-URI not valid for the plan's uri_type 404   uri_invalid
//	Request-URI a proper prefix of a valid one    484   uri_incomplete
//	secured plan, SDP with a stream not SRTP      488   srtp_required
//	secured plan, SDP that cannot be read         488   malformed_sdp
//	secured plan, multipart body that cannot be   488   malformed_body
//	  split into its parts
//	no hunt group and no default plan             404   no_dial_plan
//	hunt group or default names no known plan     500   unknown_dial_plan
//
// Plan.Check applies the first three rules in that order (transport, then
// Request-URI, then media), the order in which RFC 3261 section 8.2 has a UAS
// examine a request: a channel that the plan forbids is refused before
// anything carried over it is looked at, and the address is judged before
// the session description.
//
// See README.md in this directory for the choices made where the RFCs leave
// room (disabled streams, BUNDLE, best-effort SRTP, multipart bodies,
// visual separators in numbers).
package dialplan
