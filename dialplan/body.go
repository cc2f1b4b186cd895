package dialplan

import (
	"bytes"
	"strings"
)

// BodyError is a multipart body that cannot be split into its parts
// (RFC 2046 section 5.1): no boundary, no delimiter, no close delimiter, or
// multiparts nested deeper than three levels. Msg is printable US-ASCII.
type BodyError struct {
	Msg string
}

func (e *BodyError) Error() string { return e.Msg }

// maxMultipartDepth bounds nested multiparts.
const maxMultipartDepth = 3

// checkBody is CheckSDP for a body of any Content-Type (see Plan.CheckMedia).
func checkBody(contentType string, body []byte, depth int) (secure bool, reason string, err error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return true, "", nil
	}
	mt, params := splitContentType(contentType)
	switch {
	case mt == "" || strings.EqualFold(mt, "application/sdp"):
		return CheckSDP(body)
	case len(mt) > len("multipart/") && strings.EqualFold(mt[:len("multipart/")], "multipart/"):
		if depth >= maxMultipartDepth {
			return false, "", &BodyError{Msg: "multipart nested too deep"}
		}
		return checkMultipart(params, body, depth+1)
	}
	return true, "", nil
}

// splitContentType returns the media type of a Content-Type value and its
// parameters, both trimmed.
func splitContentType(ct string) (mediaType, params string) {
	mediaType = ct
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		mediaType, params = ct[:i], ct[i+1:]
	}
	return strings.TrimSpace(mediaType), params
}

// boundaryParam returns the boundary parameter of Content-Type parameters,
// unquoted. Two boundary parameters are refused: parsers differ on which
// one wins.
func boundaryParam(params string) (string, bool) {
	boundary, found := "", false
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, value, ok := strings.Cut(p, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "boundary") {
			continue
		}
		if found {
			return "", false
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			value = value[1 : len(value)-1]
		}
		boundary, found = value, true
	}
	return boundary, found && boundary != "" && len(boundary) <= 70
}

// checkMultipart checks every part of a multipart body; a part is checked
// as its own Content-Type says (text/plain without one, RFC 2046).
func checkMultipart(params string, body []byte, depth int) (bool, string, error) {
	boundary, ok := boundaryParam(params)
	if !ok {
		return false, "", &BodyError{Msg: "multipart without a valid boundary"}
	}
	delim := []byte("--" + boundary)
	_, next := delimiterAt(body, delim)
	if next < 0 {
		return false, "", &BodyError{Msg: "multipart without its boundary"}
	}
	rest := body[next:]
	for {
		if bytes.HasPrefix(rest, []byte("--")) {
			return true, "", nil // close delimiter
		}
		// Transport padding, then the line break that ends the delimiter line.
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return false, "", &BodyError{Msg: "multipart without a close delimiter"}
		}
		rest = rest[i+1:]
		end, next := delimiterAt(rest, delim)
		if next < 0 {
			return false, "", &BodyError{Msg: "multipart without a close delimiter"}
		}
		part := rest[:end]
		rest = rest[next:]
		ct, partBody, ok := partContentType(part)
		if !ok {
			return false, "", &BodyError{Msg: "body part with two Content-Type headers"}
		}
		if ct == "" {
			continue // text/plain by default: not media
		}
		secure, reason, err := checkBody(ct, partBody, depth)
		if err != nil || !secure {
			return secure, reason, err
		}
	}
}

// delimiterAt finds the first delimiter line of b: delim at the start of a
// line, then "--" (the close delimiter) or only spaces and tabs up to the
// line end (RFC 2046 section 5.1.1). A line such as "--boundaryX" is content:
// taking it for a delimiter would cut a part short of what other parsers
// read. end is where the content before the delimiter ends (the line break
// before it belongs to it), next is just past delim; both are -1 when there
// is no delimiter line.
func delimiterAt(b, delim []byte) (end, next int) {
	for off := 0; ; {
		i := bytes.Index(b[off:], delim)
		if i < 0 {
			return -1, -1
		}
		i += off
		off = i + 1
		if i > 0 && b[i-1] != '\n' || !delimiterLineEnd(b[i+len(delim):]) {
			continue
		}
		end = i
		if end > 0 {
			end--
			if end > 0 && b[end-1] == '\r' {
				end--
			}
		}
		return end, i + len(delim)
	}
}

// delimiterLineEnd reports whether what follows a boundary makes its line a
// delimiter: "--", or transport padding then a line end (or the body's end).
func delimiterLineEnd(b []byte) bool {
	if bytes.HasPrefix(b, []byte("--")) {
		return true
	}
	for _, c := range b {
		switch c {
		case ' ', '\t':
		case '\r', '\n':
			return true
		default:
			return false
		}
	}
	return true
}

// partContentType returns the Content-Type of a body part ("" when it has
// none) and the part's body; ok is false when the part has two Content-Type
// headers (parsers differ on which one wins).
func partContentType(part []byte) (ct string, body []byte, ok bool) {
	seen := false
	for {
		i := bytes.IndexByte(part, '\n')
		if i < 0 {
			return ct, nil, true // headers without a body
		}
		line := bytes.TrimRight(part[:i], "\r")
		part = part[i+1:]
		if len(line) == 0 {
			return ct, part, true
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if bytes.EqualFold(name, []byte("Content-Type")) || bytes.EqualFold(name, []byte("c")) {
			if seen {
				return "", nil, false
			}
			ct, seen = string(bytes.TrimSpace(value)), true
		}
	}
}
