package baresiptest

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Message is one SIP message from baresip's SIP trace (Options.SIPTrace),
// sent or received, in the order baresip printed them.
type Message struct {
	StartLine string   // "INVITE sip:... SIP/2.0" or "SIP/2.0 200 OK"
	Headers   []string // header lines as printed, without CRLF
	Body      string
}

// IsResponse reports whether the message is a response.
func (m Message) IsResponse() bool { return strings.HasPrefix(m.StartLine, "SIP/2.0 ") }

// StatusCode returns a response's status code (0 for requests).
func (m Message) StatusCode() int {
	if !m.IsResponse() {
		return 0
	}
	f := strings.Fields(m.StartLine)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// Method returns the request method, or the CSeq method of a response.
func (m Message) Method() string {
	if !m.IsResponse() {
		method, _, _ := strings.Cut(m.StartLine, " ")
		return method
	}
	f := strings.Fields(m.Header("CSeq"))
	if len(f) == 2 {
		return f[1]
	}
	return ""
}

// Header returns the value of the first header called name (or its
// compact form), "" when absent.
func (m Message) Header(name string) string {
	compact := map[string]string{"call-id": "i", "content-length": "l", "content-type": "c", "from": "f", "to": "t", "via": "v", "contact": "m"}[strings.ToLower(name)]
	for _, h := range m.Headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		if strings.EqualFold(k, name) || (compact != "" && strings.EqualFold(k, compact)) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

var startLine = regexp.MustCompile(`(?m)^(SIP/2\.0 [1-6][0-9][0-9] [^\r\n]*|[A-Z]+ [^ \r\n]+ SIP/2\.0)\r\n`)

// Trace returns the SIP messages of baresip's SIP trace so far (empty
// unless Options.SIPTrace). The trace prints each message as sent or
// received, with its CRLFs, so the body is read by its Content-Length.
func (b *Baresip) Trace() []Message {
	return parseTrace(b.Log())
}

func parseTrace(log string) []Message {
	var out []Message
	for _, loc := range startLine.FindAllStringSubmatchIndex(log, -1) {
		m := Message{StartLine: log[loc[2]:loc[3]]}
		rest := log[loc[1]:]
		end := strings.Index(rest, "\r\n\r\n")
		if end < 0 {
			continue // incomplete (still being written)
		}
		if end > 0 {
			m.Headers = strings.Split(rest[:end], "\r\n")
		}
		body := rest[end+4:]
		n, err := strconv.Atoi(m.Header("Content-Length"))
		if err != nil || n < 0 || n > len(body) {
			n = 0
		}
		m.Body = body[:n]
		out = append(out, m)
	}
	return out
}

// WaitTrace waits up to timeout for a message of the SIP trace that match
// accepts and returns it. The trace and the ctrl_tcp events travel on
// different pipes, so a message may show up a moment after its event.
func (b *Baresip) WaitTrace(timeout time.Duration, match func(Message) bool) (Message, error) {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		log, changed := b.out.snapshot()
		for _, m := range parseTrace(log) {
			if match(m) {
				return m, nil
			}
		}
		select {
		case <-changed:
		case <-b.done:
			// Exited: the output is complete; one last look.
			for _, m := range parseTrace(b.Log()) {
				if match(m) {
					return m, nil
				}
			}
			return Message{}, errors.New("baresiptest: baresip exited; no such message in its SIP trace")
		case <-tm.C:
			return Message{}, fmt.Errorf("baresiptest: no such message in the SIP trace within %v (is Options.SIPTrace set?)", timeout)
		}
	}
}

// Offer returns the SDP body of the INVITE that opened the call, from the
// SIP trace (Options.SIPTrace must be set), waiting up to timeout.
func (c *Call) Offer(timeout time.Duration) (string, error) {
	m, err := c.b.WaitTrace(timeout, func(m Message) bool {
		return !m.IsResponse() && m.Method() == "INVITE" && m.Header("Call-ID") == c.ID
	})
	if err != nil {
		return "", fmt.Errorf("call %s: INVITE: %w", c.ID, err)
	}
	return m.Body, nil
}

// FinalResponse returns the first final response to the call's INVITE
// that baresip received, from the SIP trace (Options.SIPTrace must be
// set), waiting up to timeout.
func (c *Call) FinalResponse(timeout time.Duration) (Message, error) {
	m, err := c.b.WaitTrace(timeout, func(m Message) bool {
		return m.IsResponse() && m.Method() == "INVITE" && m.StatusCode() >= 200 && m.Header("Call-ID") == c.ID
	})
	if err != nil {
		return m, fmt.Errorf("call %s: final response: %w", c.ID, err)
	}
	return m, nil
}
