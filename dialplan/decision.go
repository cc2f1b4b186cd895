package dialplan

// Reasons of refusals: log reasons and metric label values (snake_case, a
// closed set, so that a metric labelled with them keeps a low cardinality).
const (
	ReasonTLSRequired     = "tls_required"      // 403: signaling not over TLS/DTLS
	ReasonURIInvalid      = "uri_invalid"       // 404: Request-URI not valid for the plan
	ReasonURIIncomplete   = "uri_incomplete"    // 484: Request-URI a proper prefix of a valid one
	ReasonSRTPRequired    = "srtp_required"     // 488: a media stream is not SRTP
	ReasonMalformedSDP    = "malformed_sdp"     // 488: SDP that cannot be read
	ReasonMalformedBody   = "malformed_body"    // 488: multipart body that cannot be split
	ReasonNoDialPlan      = "no_dial_plan"      // 404: no hunt group and no default plan
	ReasonUnknownDialPlan = "unknown_dial_plan" // 500: a plan name that no plan carries
)

// Reasons returns every Reason a Decision of this package can carry, in a
// fresh slice: what a metric needs to create its series up front.
func Reasons() []string {
	return []string{
		ReasonTLSRequired, ReasonURIInvalid, ReasonURIIncomplete, ReasonSRTPRequired,
		ReasonMalformedSDP, ReasonMalformedBody, ReasonNoDialPlan, ReasonUnknownDialPlan,
	}
}

// Decision is the outcome of a check: Allow, or a refusal.
//
// A refusal carries the SIP status Code to answer with, a Warning text for
// `Warning: 399 <advertise> "<Warning>"` and a Reason for logs and metrics.
// Warning is printable US-ASCII without '"' or '\', shorter than 150 bytes,
// so it can be put between quotes as it is, even when it quotes tokens of
// the offending SDP (each cut to 40 bytes). An allowed Decision has Code 0
// and empty texts.
type Decision struct {
	Allow   bool
	Code    int
	Warning string
	Reason  string
}

// Phrase returns the reason phrase of d.Code as RFC 3261 names it, or ""
// for an allowed Decision.
func (d Decision) Phrase() string {
	switch d.Code {
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 484:
		return "Address Incomplete"
	case 488:
		return "Not Acceptable Here"
	case 500:
		return "Server Internal Error"
	}
	return ""
}

var allowed = Decision{Allow: true}

func refuse(code int, reason, warning string) Decision {
	return Decision{Code: code, Reason: reason, Warning: warning}
}

// Request is what a decision needs from a SIP request.
type Request struct {
	// Method as on the request line; SIP methods are case-sensitive.
	Method string
	// Transport the request arrived on.
	Transport Transport
	// User and Host of the Request-URI, as they appear in it (escaped form).
	User, Host string
	// ContentType is the Content-Type header value, parameters included
	// (a multipart body needs its boundary); empty when absent.
	ContentType string
	// Body is the message body; nil or empty when there is none.
	Body []byte
	// InDialog is true when the To header carries a tag.
	InDialog bool
}

// Check decides whether r may pass under plan p, applying in this order:
//
//  1. CheckTransport, to every request (an ACK too: the proxy cannot answer
//     an ACK, so a refused ACK is dropped, not answered);
//  2. CheckURI, to out-of-dialog requests other than ACK and CANCEL (those
//     belong to the INVITE transaction, whose Request-URI was judged);
//     in-dialog requests address a remote target, not a dialed number;
//  3. CheckMedia, to the methods that carry an SDP offer or answer: INVITE
//     (re-INVITE included), ACK (the answer to a late offer), PRACK (see
//     RFC 3262) and UPDATE (see RFC 3311), in or out of dialog. Other
//     methods' bodies are not media and are not read.
//
// The first refusal is returned. Check never panics, whatever the body.
func (p Plan) Check(r Request) Decision {
	if d := p.CheckTransport(r.Transport); !d.Allow {
		return d
	}
	if !r.InDialog && r.Method != "ACK" && r.Method != "CANCEL" {
		if d := p.CheckURI(r.User, r.Host); !d.Allow {
			return d
		}
	}
	switch r.Method {
	case "INVITE", "ACK", "PRACK", "UPDATE":
		return p.CheckMedia(r.ContentType, r.Body)
	}
	return allowed
}

// CheckTransport refuses signaling over a transport that the plan does not
// accept: a plan that RequiresTLS answers 403 "TLS required" to anything but
// TLS and DTLS.
func (p Plan) CheckTransport(t Transport) Decision {
	if p.RequiresTLS() && !t.Secure() {
		return refuse(403, ReasonTLSRequired, "TLS required")
	}
	return allowed
}

// CheckMedia applies the plan's media rule to a message body of the given
// Content-Type: on a plan that RequiresSRTP, a body whose SDP makes any
// stream active without SRTP is refused with 488, as is a body that cannot
// be read (fail closed); other plans allow every body.
//
// Requests reach it through Check; the proxy calls it itself for responses
// that carry an answer or an early-media description (18x and 2xx with a
// body), since a response cannot be refused by answering it: the proxy
// ends such a call instead.
//
// Bodies are read as follows (see README.md): an empty body, or one of only
// whitespace, carries no media (a late offer); application/sdp, or a body
// without Content-Type, is SDP; multipart/* is split (RFC 2046) and every
// application/sdp part is checked, nested multiparts up to three levels;
// any other type is not media and is allowed.
func (p Plan) CheckMedia(contentType string, body []byte) Decision {
	if !p.RequiresSRTP() {
		return allowed
	}
	secure, reason, err := checkBody(contentType, body, 0)
	switch {
	case err != nil:
		if _, ok := err.(*BodyError); ok {
			return refuse(488, ReasonMalformedBody, "malformed body: "+err.Error())
		}
		return refuse(488, ReasonMalformedSDP, "malformed SDP: "+err.Error())
	case !secure:
		return refuse(488, ReasonSRTPRequired, reason)
	}
	return allowed
}
