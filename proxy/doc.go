// Package proxy is umrouter's SIP core: the gateway-facing listeners, peer
// identification, the stateful forwarding of requests to the UM backend pool
// and of responses back, and the routing of in-dialog requests in both
// directions.
//
// The proxy uses sipgo's sip package for parsing and the message model, but
// owns the connection loop and the transaction core: each connection is read
// by one goroutine that handles its messages in the order they arrived, so a
// 180 is never overtaken by its 200 and a BYE never by the ACK before it
// (sipgo v1.7.3 hands every message to its own goroutine; see DESIGN.md).
package proxy
