package proxy

import (
	"bytes"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// inResponse is a response as it arrives, read by a scan of its bytes for
// the few fields relaying needs (status, our Via's branch and flow, CSeq
// method, Content-Type, body). Relaying the common answers (100, 180, 200)
// needs nothing else; sipgo's full parse, which costs more than the rest of
// relaying together (docs/PERFORMANCE.md), runs only when a rarer path
// (ACK of a non-2xx, a refused answer, failover) needs the model, or when
// the bytes have a shape the scan does not read.
type inResponse struct {
	raw         []byte // valid only while the response is handled
	code        int
	branch      string // the top Via's branch
	flowID      string // the top Via's "fl" parameter: our stream connection
	cseqMethod  []byte
	contentType []byte
	retryAfter  []byte
	body        []byte

	parsed *sip.Response
	parser *sip.Parser // for model; nil when parsed is set from the start
}

// model returns the parsed response, parsing it on first use; nil when
// sipgo cannot parse what the scan accepted.
func (r *inResponse) model() *sip.Response {
	if r.parsed == nil && r.parser != nil {
		m, err := r.parser.ParseSIP(r.raw)
		r.parser = nil
		if res, ok := m.(*sip.Response); ok && err == nil {
			r.parsed = res
		}
	}
	return r.parsed
}

// scanResponse reads raw as a response of the shape most peers send: a
// "SIP/2.0 NNN" status line, unfolded header lines, one CSeq and one
// Content-Length header, a branch on the top Via. It reports false for
// anything else; the caller then parses the bytes in full.
func scanResponse(raw []byte) (inResponse, bool) {
	r := inResponse{raw: raw}
	if len(raw) < 12 || !bytes.HasPrefix(raw, []byte("SIP/2.0 ")) || (raw[11] != ' ' && raw[11] != '\r') {
		return r, false
	}
	for _, c := range raw[8:11] {
		if c < '0' || c > '9' {
			return r, false
		}
		r.code = r.code*10 + int(c-'0')
	}
	if r.code < 100 {
		return r, false
	}
	var via, cseq, length headerLine
	vias, cseqs, lengths := 0, 0, 0
	body, ok := scanHeaders(raw, func(h headerLine) bool {
		switch {
		case h.kind == hVia:
			if vias == 0 {
				via = h
			}
			vias++
		case h.kind == hCSeq:
			cseq = h
			cseqs++
		case h.kind == hContentLength:
			length = h
			lengths++
		case h.kind == hContentType:
			r.contentType = bytes.TrimSpace(raw[h.valueStart : h.end-2])
		case h.kind == hRetryAfter:
			r.retryAfter = raw[h.valueStart : h.end-2]
		}
		return true
	})
	if !ok || vias == 0 || cseqs != 1 || lengths != 1 {
		return r, false
	}
	if r.body, ok = bodyOf(raw, body, length); !ok {
		return r, false
	}
	seq := bytes.Fields(raw[cseq.valueStart : cseq.end-2])
	if len(seq) != 2 {
		return r, false
	}
	r.cseqMethod = seq[1]
	top := raw[via.valueStart : via.end-2]
	if i := firstComma(top); i >= 0 {
		top = top[:i]
	}
	branch, ok := viaParam(top, "branch")
	if !ok || len(branch) == 0 {
		return r, false
	}
	r.branch = string(branch)
	if fl, ok := viaParam(top, "fl"); ok {
		r.flowID = string(fl)
	}
	return r, true
}

// bodyOf is the body of raw, which starts at offset body, as long as the
// Content-Length line length says; false when that is not a number or
// runs past raw.
func bodyOf(raw []byte, body int, length headerLine) ([]byte, bool) {
	n, err := strconv.Atoi(string(bytes.TrimSpace(raw[length.valueStart : length.end-2])))
	if err != nil || n < 0 || body+n > len(raw) {
		return nil, false
	}
	return raw[body : body+n], true
}

// viaParam returns the value of parameter name (case-insensitive) of one
// Via value: "SIP/2.0/UDP host:port;branch=z9hG4bK...;rport".
func viaParam(v []byte, name string) ([]byte, bool) {
	i := bytes.IndexByte(v, ';')
	for i >= 0 {
		v = v[i+1:]
		end := bytes.IndexByte(v, ';')
		p := v
		if end >= 0 {
			p = v[:end]
		}
		k, val, _ := bytes.Cut(p, []byte("="))
		if bytes.EqualFold(bytes.TrimSpace(k), []byte(name)) {
			return bytes.TrimSpace(val), true
		}
		i = end
	}
	return nil, false
}

// responseFromModel fills an inResponse from a response sipgo parsed (the
// shapes scanResponse leaves to it).
func responseFromModel(res *sip.Response, raw []byte) (inResponse, bool) {
	via := res.Via()
	if via == nil || res.CSeq() == nil {
		return inResponse{}, false
	}
	r := inResponse{raw: raw, code: res.StatusCode, parsed: res, cseqMethod: []byte(res.CSeq().MethodName), body: res.Body()}
	r.branch, _ = via.Params.Get("branch")
	r.flowID, _ = via.Params.Get("fl")
	if h := res.ContentType(); h != nil {
		r.contentType = []byte(h.Value())
	}
	if h := res.GetHeader("Retry-After"); h != nil {
		r.retryAfter = []byte(h.Value())
	}
	return r, true
}

// retryAfterValue reads a Retry-After value ("120", "120;duration=60",
// "18000 (in five hours)") as a duration, or def when it says nothing usable.
func retryAfterValue(v []byte, def time.Duration) time.Duration {
	if len(v) == 0 {
		return def
	}
	s := string(v)
	s = strings.TrimSpace(strings.SplitN(s, ";", 2)[0])
	s = strings.TrimSpace(strings.SplitN(s, "(", 2)[0])
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n <= 3600 {
		return time.Duration(n) * time.Second
	}
	return def
}
