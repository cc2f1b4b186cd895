package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/umrouter/umrouter/dialplan"
	"github.com/umrouter/umrouter/metrics"
)

// Fuzz targets for what the proxy reads from peers it does not control:
// the stream framing (framing.go), the 400 built from the raw header lines
// of a message that does not parse (handler.go, badRequestFor), and the
// whole handling of one message (handleFrame, handleDatagram). Each is
// seeded with every torture message of testdata/torture, with the seeds
// of testdata/fuzz/<target>/, and with the f.Add calls below;
// `go test ./proxy -run Fuzz` runs the seeds, `make fuzz` fuzzes.

// addTortureSeeds adds every torture message as a seed, with the extra
// arguments the target takes.
func addTortureSeeds(f *testing.F, extra ...any) {
	f.Helper()
	msgs := tortureMessages(f)
	names := make([]string, 0, len(msgs))
	for name := range msgs {
		names = append(names, name)
	}
	sort.Strings(names) // seed#N names the same message every run
	for _, name := range names {
		f.Add(append([]any{msgs[name]}, extra...)...)
	}
}

// FuzzFrameReader: whatever bytes a peer sends, the frame reader never
// panics, never returns a frame, nor keeps a partial message, larger than
// its limit, returns frames that are the stream's own bytes in order, and
// cuts the stream the same way however the bytes are split into reads
// (TCP segments and TLS records fall anywhere).
func FuzzFrameReader(f *testing.F) {
	addTortureSeeds(f, uint16(65534))
	addTortureSeeds(f, uint16(200))
	f.Add([]byte("\r\n\r\n\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabc\r\n"), uint16(1023))
	f.Add([]byte("INVITE sip:a@b SIP/2.0\r\nContent-Length: 5\r\nContent-Length: 13\r\n\r\nhello world!!"), uint16(1023))
	f.Add([]byte("INVITE sip:a@b SIP/2.0\nContent-Length:  +3\n\nabc"), uint16(100))
	f.Fuzz(func(t *testing.T, data []byte, limit uint16) {
		maxBytes := int(limit) + 1
		whole := readFrames(data, maxBytes, 4096, false)
		bytewise := readFrames(data, maxBytes, 16, true)
		for _, r := range []framing{whole, bytewise} {
			pos := 0
			for i, fr := range r.frames {
				if len(fr) > maxBytes {
					t.Fatalf("frame %d has %d bytes, limit %d", i, len(fr), maxBytes)
				}
				at := bytes.Index(data[pos:], fr)
				if at < 0 {
					t.Fatalf("frame %d is not the stream's bytes in order: %q", i, fr)
				}
				pos += at + len(fr)
			}
			if r.partial > maxBytes {
				t.Fatalf("kept %d bytes of a message, limit %d", r.partial, maxBytes)
			}
		}
		if len(whole.frames) != len(bytewise.frames) || whole.pongs != bytewise.pongs {
			t.Fatalf("read whole: %d frames, %d pongs; read byte by byte: %d frames, %d pongs",
				len(whole.frames), whole.pongs, len(bytewise.frames), bytewise.pongs)
		}
		for i := range whole.frames {
			if !bytes.Equal(whole.frames[i], bytewise.frames[i]) {
				t.Fatalf("frame %d differs with the reads' sizes:\n%q\n%q", i, whole.frames[i], bytewise.frames[i])
			}
		}
		// The stream ends the same way, except that a message still too
		// long when the stream ends may be reported as the end of the
		// stream: bufio hands a line over only once it is whole or the
		// buffer is full.
		we, be := frameErrClass(whole.err), frameErrClass(bytewise.err)
		if we != be && !(we == "eof" && be == "too_large" || we == "too_large" && be == "eof") {
			t.Fatalf("the stream ends with %v read whole, with %v read byte by byte", whole.err, bytewise.err)
		}
	})
}

// framing is how a frame reader cut a stream.
type framing struct {
	frames  [][]byte
	pongs   int
	err     error // what ended the stream
	partial int   // bytes of the message under way when it ended
}

// readFrames runs a frameReader over data, bufSize bytes of buffer, reading
// one byte at a time from the stream when oneByte is set.
func readFrames(data []byte, maxBytes, bufSize int, oneByte bool) framing {
	var out framing
	var r io.Reader = bytes.NewReader(data)
	if oneByte {
		r = iotest.OneByteReader(r)
	}
	fr := frameReader{r: bufio.NewReaderSize(r, bufSize), maxBytes: maxBytes, pong: func() { out.pongs++ }}
	for {
		frame, err := fr.next()
		if err != nil {
			out.err, out.partial = err, len(fr.partial())
			return out
		}
		out.frames = append(out.frames, bytes.Clone(frame))
	}
}

func frameErrClass(err error) string {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case err == nil:
		return "none"
	}
	return framingReason(err)
}

// FuzzBadRequestFor: the error response built from the raw lines of a
// message that did not parse is nil, or one whole message on a stream, with
// no bare CR or LF in it, that parses as a response with the status asked
// (its structure: status line, header lines, Content-Length; the values it
// copies may be as malformed as the message it answers, RFC 4475 section
// 3.1.2.1), and copies each header it has whole: a folded line (RFC 3261
// section 7.3.1) is one value, or the gateway cannot match the response.
func FuzzBadRequestFor(f *testing.F) {
	addTortureSeeds(f)
	f.Add([]byte("INVITE x SIP/2.0\r\nVia: a\nInjected: b\r\nFrom: c\r\nTo: d\r\nCall-ID: e\r\nCSeq: 1 INVITE\r\n\r\n"))
	f.Add([]byte("X\r\nv:\r\nf:\r\nt:\r\ni:\r\ncseq:\r\n"))
	f.Add([]byte("INVITE x SIP/2.0\r\nVia: SIP/2.0/TLS h\r\n ;branch=z9hG4bK1\r\nFrom: c\r\nTo: d\r\nCall-ID: e\r\nCSeq: 1\r\n\tINVITE\r\n\r\n"))
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, c := range []struct {
			code int
			resp []byte
		}{
			{400, badRequestFor(frame)},
			{413, errorResponseFor(frame, 413, "Request Entity Too Large")},
		} {
			if c.resp == nil {
				continue
			}
			checkOneMessage(t, c.resp)
			msg, err := structuralParser.ParseSIP(bytes.Clone(c.resp))
			if err != nil {
				t.Fatalf("the %d does not parse: %v\n%q", c.code, err, c.resp)
			}
			res, ok := msg.(*sip.Response)
			if !ok || res.StatusCode != c.code || len(res.Body()) != 0 {
				t.Fatalf("want a %d response with no body, got %q", c.code, c.resp)
			}
			sent := unfoldedHeaders(frame)
			for _, h := range unfoldedHeaders(c.resp)[1:] {
				if h.name == "content-length" {
					continue
				}
				whole := false
				for _, in := range sent {
					whole = whole || canonicalHeaderName(in.name) == canonicalHeaderName(h.name) && in.value == h.value
				}
				if !whole {
					t.Fatalf("the %d has %s: %q, which is not a whole header of the message:\n%q\n%q", c.code, h.name, h.value, frame, c.resp)
				}
			}
		}
	})
}

// TestErrorResponseForCopiesFoldedHeadersWhole: a header line may be folded
// (RFC 3261 section 7.3.1); the 400 must copy the whole value, or the
// gateway cannot match it (its branch is on the second line here).
func TestErrorResponseForCopiesFoldedHeadersWhole(t *testing.T) {
	req := "INVITE sip:12345@127.0.0.1 SIP/2.0 extra\r\nVia: SIP/2.0/TLS 192.0.2.1:5061\r\n ;branch=z9hG4bK-folded\r\n" +
		"From: <sip:gw@gw1.example.test>\r\n ;tag=1\r\nTo: <sip:12345@127.0.0.1>\r\nCall-ID: folded-1\r\nCSeq: 1\r\n\tINVITE\r\nContent-Length: 0\r\n\r\n"
	resp := badRequestFor([]byte(req))
	if resp == nil {
		t.Fatal("no 400 for a request whose Via, From, To, Call-ID and CSeq are all there")
	}
	fail := func(what string) {
		t.Fatalf("the 400 does not carry the folded headers whole: %s in\n%s", what, resp)
	}
	msg, err := sip.ParseMessage(bytes.Clone(resp))
	if err != nil {
		fail(err.Error())
	}
	res := msg.(*sip.Response)
	if v := res.Via(); v == nil || v.Params == nil || !v.Params.Has("branch") {
		fail("no Via branch")
	} else if b, _ := v.Params.Get("branch"); b != "z9hG4bK-folded" {
		fail("Via branch " + b)
	}
	if f := res.From(); f == nil || f.Params == nil || !f.Params.Has("tag") {
		fail("no From tag")
	}
	if cs := res.CSeq(); cs == nil || cs.MethodName != sip.INVITE {
		fail("no CSeq method")
	}
}

// TestErrorResponseForHasNoBareLineBreak: a bare LF in a header line of the
// request must not reach the response, where a peer that accepts LF line
// ends would read it as the start of another header.
func TestErrorResponseForHasNoBareLineBreak(t *testing.T) {
	req := "INVITE sip:12345@127.0.0.1 SIP/2.0 extra\r\nVia: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-lf\nX-Injected: 1\r\n" +
		"From: <sip:gw@gw1.example.test>;tag=1\r\nTo: <sip:12345@127.0.0.1>\r\nCall-ID: lf-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
	resp := badRequestFor([]byte(req))
	head, _, _ := bytes.Cut(resp, []byte("\r\n\r\n"))
	if bytes.ContainsAny(bytes.ReplaceAll(head, []byte("\r\n"), nil), "\r\n") {
		t.Fatalf("a header line with a bare LF was copied into the response:\n%q", resp)
	}
}

// TestBareLineBreakInHeaderIsRefusedWith400: SIP lines end with CRLF and a
// header value continues only after CRLF and whitespace (RFC 3261 sections
// 7.3.1, 25.1); a bare LF inside a header line makes the message mean two
// things: one header to umrouter, two to any peer that takes LF for a line
// end. umrouter must refuse it, not forward it.
func TestBareLineBreakInHeaderIsRefusedWith400(t *testing.T) {
	fh := newFuzzHandler(t)
	fh.reset()
	fh.s.handleFrame(fh.open, []byte("OPTIONS sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-lf\r\n"+
		"Subject: hello\nRoute: <sip:elsewhere.example.com;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:gw@gw1.example.test>;tag=1\r\n"+
		"To: <sip:user@example.com>\r\nCall-ID: bare-lf-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"))
	sent := fh.drainBackend(t)
	got := ""
	if len(fh.rec.writes) > 0 {
		got = firstLine(fh.rec.writes[0])
	}
	if len(sent) > 0 || got != "SIP/2.0 400 Bad Request" {
		t.Fatalf("the backend got %d message(s), the gateway %q; want a 400 and nothing forwarded:\n%q", len(sent), got, sent)
	}
}

// TestUnknownMethodsDoNotGrowMetricSeries: a gateway chooses the method
// token; labelling umrouter_requests_total and umrouter_responses_total by
// it as sent lets one gateway create a series per request, without bound
// (DESIGN.md: low-cardinality labels). Methods umrouter does not know must
// share one label value.
func TestUnknownMethodsDoNotGrowMetricSeries(t *testing.T) {
	fh := newFuzzHandler(t)
	fh.reset()
	const n = 20
	for i := range n {
		m := fmt.Sprintf("XMETHOD%d", i)
		fh.s.handleFrame(fh.open, []byte(fmt.Sprintf("%s sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-m%d\r\n"+
			"Max-Forwards: 70\r\nFrom: <sip:gw@gw1.example.test>;tag=%d\r\nTo: <sip:user@example.com>\r\nCall-ID: m-%d\r\nCSeq: 1 %s\r\nContent-Length: 0\r\n\r\n",
			m, i, i, i, m)))
	}
	if got := testutil.CollectAndCount(fh.s.m.Requests); got > 2 {
		t.Fatalf("%d requests with %d unknown methods made %d series of umrouter_requests_total; unknown methods must share one label value", n, n, got)
	}
}

// TestResponseToOurACKIsNotAcknowledged: umrouter acknowledges a non-2xx
// final hop by hop, and again for each retransmission of that final (RFC
// 3261 section 17.1.1.2). A "response" to the ACK itself (CSeq method ACK)
// is no retransmission: answering it with another ACK lets a broken or
// hostile backend that answers every request, ACK included, keep umrouter
// sending ACKs for as long as the transaction is kept.
func TestResponseToOurACKIsNotAcknowledged(t *testing.T) {
	fh := newFuzzHandler(t)
	fh.reset()
	fh.s.handleFrame(fh.open, []byte("INVITE sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-ack\r\nMax-Forwards: 70\r\n"+
		"From: <sip:gw@gw1.example.test>;tag=1\r\nTo: <sip:user@example.com>\r\nCall-ID: ack-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"))
	if sent := fh.drainBackend(t); len(sent) != 1 {
		t.Fatalf("the INVITE reached the backend %d times, want 1", len(sent))
	}
	final := func(method string) []byte {
		return []byte("SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=" + fh.s.branchPrefix + "1\r\n" +
			"Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-ack\r\nFrom: <sip:gw@gw1.example.test>;tag=1\r\nTo: <sip:user@example.com>;tag=b\r\n" +
			"Call-ID: ack-1\r\nCSeq: 1 " + method + "\r\nContent-Length: 0\r\n\r\n")
	}
	fh.s.handleDatagram(udpFlow{pc: fh.s.udp, addr: fh.backend}, final("INVITE"))
	if sent := fh.drainBackend(t); len(sent) != 1 || !bytes.HasPrefix(sent[0], []byte("ACK ")) {
		t.Fatalf("after the 486, the backend got %q, want one ACK", sent)
	}
	for range 3 {
		fh.s.handleDatagram(udpFlow{pc: fh.s.udp, addr: fh.backend}, final("ACK"))
	}
	if sent := fh.drainBackend(t); len(sent) > 0 {
		t.Fatalf("three responses whose CSeq method is ACK got %d more ACKs, want none", len(sent))
	}
}

// TestDatagramWithoutContentLengthGetsOneOnAStream: over UDP a message may
// omit Content-Length, its body being the rest of the datagram (RFC 3261
// section 18.3); forwarded over TLS or TCP it must carry one, or the
// gateway cannot frame it, nor anything after it on that connection.
func TestDatagramWithoutContentLengthGetsOneOnAStream(t *testing.T) {
	t.Run("request from the backend", func(t *testing.T) {
		fh := newFuzzHandler(t)
		fh.reset()
		fh.s.handleDatagram(udpFlow{pc: fh.s.udp, addr: fh.backend}, []byte("MESSAGE sip:gw@127.0.0.1 SIP/2.0\r\n"+
			"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-nocl\r\nMax-Forwards: 70\r\nFrom: <sip:12345@127.0.0.1>;tag=b\r\n"+
			"To: <sip:gw@gw1.example.test>\r\nCall-ID: nocl-1\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n\r\nhello"))
		checkStreamCopyOf(t, fh, "hello")
	})
	t.Run("response from the backend", func(t *testing.T) {
		fh := newFuzzHandler(t)
		fh.reset()
		fh.s.handleFrame(fh.open, []byte("OPTIONS sip:user@example.com SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-nocl\r\n"+
			"Max-Forwards: 70\r\nFrom: <sip:gw@gw1.example.test>;tag=1\r\nTo: <sip:user@example.com>\r\nCall-ID: nocl-2\r\nCSeq: 1 OPTIONS\r\n"+
			"Content-Length: 0\r\n\r\n"))
		fh.drainBackend(t)
		fh.s.handleDatagram(udpFlow{pc: fh.s.udp, addr: fh.backend}, []byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch="+
			fh.s.branchPrefix+"1\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-nocl\r\nFrom: <sip:gw@gw1.example.test>;tag=1\r\n"+
			"To: <sip:user@example.com>;tag=b\r\nCall-ID: nocl-2\r\nCSeq: 1 OPTIONS\r\nContent-Type: text/plain\r\n\r\nhello"))
		checkStreamCopyOf(t, fh, "hello")
	})
}

// checkStreamCopyOf: the gateway got one message, framed, ending in body.
func checkStreamCopyOf(t *testing.T, fh *fuzzHandler, body string) {
	t.Helper()
	if len(fh.rec.writes) != 1 {
		t.Fatalf("the gateway got %d messages, want 1", len(fh.rec.writes))
	}
	w := fh.rec.writes[0]
	fr := frameReader{r: bufio.NewReader(bytes.NewReader(w)), maxBytes: 1 << 16}
	if frame, err := fr.next(); err != nil || !bytes.HasSuffix(frame, []byte("\r\n\r\n"+body)) {
		t.Fatalf("the gateway cannot frame what it got (%v):\n%q", err, w)
	}
}

// rawHeader is a header line as a stream peer writes it, unfolded.
type rawHeader struct{ name, value string }

// unfoldedHeaders returns the start line (as a header with no value) and
// the header lines of msg up to the empty line, continuation lines joined
// to the line they continue, values without their whitespace: the LWS a
// fold stands for may be dropped next to a separator (RFC 3261 section
// 25.1, SWS), so values compare equal whichever way they were folded.
func unfoldedHeaders(msg []byte) []rawHeader {
	head, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	lines := bytes.Split(head, []byte("\r\n"))
	out := []rawHeader{{name: string(lines[0])}}
	var cur []byte
	flush := func() {
		if cur == nil {
			return
		}
		name, value, ok := bytes.Cut(cur, []byte(":"))
		if ok {
			out = append(out, rawHeader{
				name:  string(bytes.ToLower(bytes.TrimSpace(name))),
				value: string(bytes.Join(bytes.Fields(value), nil)),
			})
		}
		cur = nil
	}
	for _, l := range lines[1:] {
		if len(l) > 0 && (l[0] == ' ' || l[0] == '\t') && cur != nil {
			cur = append(append(cur, ' '), l...)
			continue
		}
		flush()
		cur = append([]byte(nil), l...)
	}
	flush()
	return out
}

// canonicalHeaderName maps compact forms to full names, in lower case.
func canonicalHeaderName(n string) string {
	switch n {
	case "v":
		return "via"
	case "f":
		return "from"
	case "t":
		return "to"
	case "i":
		return "call-id"
	}
	return n
}

// structuralParser reads a message's start line, header lines and
// Content-Length, and no header value: a response that echoes a malformed
// header must still be a SIP message.
var structuralParser = sip.NewParser(sip.WithHeadersParsers(map[string]sip.HeaderParser{
	"content-length": sip.DefaultHeadersParser()["content-length"],
	"l":              sip.DefaultHeadersParser()["l"],
}))

// checkOneMessage fails unless b is exactly one SIP message for a stream
// peer's framing, with no CR or LF but in CRLF line ends of its header.
func checkOneMessage(t *testing.T, b []byte) {
	t.Helper()
	if err := oneMessageErr(b); err != nil {
		t.Fatal(err)
	}
}

func oneMessageErr(b []byte) error {
	fr := frameReader{r: bufio.NewReader(bytes.NewReader(b)), maxBytes: 1 << 20}
	got, err := fr.next()
	if err != nil || !bytes.Equal(got, b) {
		return fmt.Errorf("not one framed message (%v):\n%q", err, b)
	}
	if _, err := fr.next(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("more than one message (%v):\n%q", err, b)
	}
	return headerLineBreakErr(b)
}

// headerLineBreakErr reports a CR or LF in b's header but in CRLF line ends.
func headerLineBreakErr(b []byte) error {
	head, _, _ := bytes.Cut(b, []byte("\r\n\r\n"))
	if bytes.ContainsAny(bytes.ReplaceAll(head, []byte("\r\n"), nil), "\r\n") {
		return fmt.Errorf("bare CR or LF in the header:\n%q", b)
	}
	return nil
}

// FuzzHandleFrame: whatever a gateway sends over its connection, and
// whatever a backend sends over UDP, handling it never panics, and what
// umrouter sends, to the gateway or to the backend, is message by message
// one whole SIP message that parses, with no bare CR or LF in its header.
// The input is a stream cut by the frame reader (a response goes to the
// backend's UDP path, as do requests when fromBackend is set); the gateway
// is on an unsecured sip-uri plan, or on a secured 5-digit extension plan
// when secured is set. The server is New's, not Run: no listener, no timer,
// a UDP socket on loopback for the backend side, a recorded connection for
// the gateway.
func FuzzHandleFrame(f *testing.F) {
	addTortureSeeds(f, false, false)
	addTortureSeeds(f, true, false)
	fh := newFuzzHandler(f)
	inv := "INVITE sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-1\r\nMax-Forwards: 70\r\n" +
		"From: <sip:gw@gw1.example.test>;tag=1\r\nTo: <sip:12345@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
	resp := func(code, phrase string) string {
		return "SIP/2.0 " + code + " " + phrase + "\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=" + fh.s.branchPrefix + "1\r\n" +
			"Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-1\r\nFrom: <sip:gw@gw1.example.test>;tag=1\r\nTo: <sip:12345@127.0.0.1>;tag=b\r\n" +
			"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:12345@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
	}
	f.Add([]byte(inv+resp("180", "Ringing")+resp("200", "OK")), false, false)
	f.Add([]byte(inv+resp("503", "Service Unavailable")+resp("486", "Busy Here")), true, false)
	f.Add([]byte(inv+"CANCEL sip:12345@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-1\r\nFrom: <sip:gw@gw1.example.test>;tag=1\r\n"+
		"To: <sip:12345@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"+resp("487", "Request Terminated")), false, false)
	f.Add([]byte("BYE sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-b\r\nRoute: <sip:test-node@127.0.0.1;lr;umr=g;gw=gw1;fl=1;dp=main>\r\n"+
		"From: <sip:12345@127.0.0.1>;tag=b\r\nTo: <sip:gw@gw1.example.test>;tag=1\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"), false, true)
	f.Fuzz(func(t *testing.T, data []byte, secured, fromBackend bool) {
		frames, datagram := fuzzFrames(data)
		fh.reset()
		gw, gwUDP := fh.open, udpFlow{pc: fh.s.udp, addr: netip.MustParseAddrPort("127.0.0.1:5999")}
		if secured {
			gw, gwUDP.addr = fh.secured, netip.MustParseAddrPort("127.0.0.2:5999")
		}
		for _, frame := range frames {
			switch {
			case fromBackend || bytes.HasPrefix(frame, []byte("SIP/")):
				fh.s.handleDatagram(udpFlow{pc: fh.s.udp, addr: fh.backend}, frame)
			case datagram:
				fh.s.handleDatagram(gwUDP, frame) // a gateway on listen.udp
			default:
				fh.s.handleFrame(gw, frame)
			}
		}
		// To the gateway's TLS connection: one framed message per write.
		for _, w := range fh.rec.writes {
			if len(w) == 2 && string(w) == "\r\n" {
				continue // keep-alive pong
			}
			if err := oneMessageErr(w); err != nil {
				t.Fatal(err)
			}
			if _, err := structuralParser.ParseSIP(bytes.Clone(w)); err != nil {
				t.Fatalf("umrouter sent the gateway a message that does not parse: %v\n%q", err, w)
			}
		}
		// To the UDP backend: one message per datagram.
		for _, w := range fh.drainBackend(t) {
			if err := headerLineBreakErr(w); err != nil {
				t.Fatal(err)
			}
			if _, err := structuralParser.ParseSIP(bytes.Clone(w)); err != nil {
				t.Fatalf("umrouter sent the backend a message that does not parse: %v\n%q", err, w)
			}
		}
	})
}

// fuzzFrames cuts data as a stream peer's framing would; data that frames
// into nothing is taken as one datagram.
func fuzzFrames(data []byte) (frames [][]byte, datagram bool) {
	fr := frameReader{r: bufio.NewReader(bytes.NewReader(data)), maxBytes: 1 << 16}
	for {
		frame, err := fr.next()
		if err != nil {
			break
		}
		frames = append(frames, bytes.Clone(frame))
	}
	if len(frames) == 0 {
		return [][]byte{data}, true
	}
	return frames, false
}

// fuzzHandler is a Server ready to handle messages without running.
type fuzzHandler struct {
	s             *Server
	rec           *recordingConn
	open, secured *streamConn
	backend       netip.AddrPort
	sink          *net.UDPConn // the backend's socket: what umrouter sends it
}

// drainBackend returns the datagrams umrouter sent the backend. Loopback
// delivers a datagram before sendto returns, so they are all queued: they
// are read without waiting, until the socket has none left.
func (fh *fuzzHandler) drainBackend(t *testing.T) [][]byte {
	t.Helper()
	rc, err := fh.sink.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	buf := make([]byte, 1<<16)
	for {
		n, rerr := 0, error(nil)
		if err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if rerr != nil || n <= 0 {
			return out
		}
		out = append(out, bytes.Clone(buf[:n]))
	}
}

func newFuzzHandler(f testing.TB) *fuzzHandler {
	f.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { udp.Close() })
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sink.Close() })
	// A port where nothing listens: an outcall to the gateway fails at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	closed := l.Addr().(*net.TCPAddr).Port
	l.Close()

	backend := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	cfg, _ := baseConfig(backend.String())
	cfg.Gateways = []Gateway{
		{Name: "gw1", Address: "127.0.0.1", Port: closed, DialPlan: "open"},
		{Name: "gw2", Address: "127.0.0.2", Port: closed, DialPlan: "main"},
	}
	cfg.SetDefaults()
	plans := dialplan.Plans{
		{Name: "open", Security: dialplan.Unsecured, URIType: dialplan.SIPURI},
		{Name: "main", Security: dialplan.Secured, URIType: dialplan.TelephoneExtension, NumberOfDigits: 5},
	}
	s, err := New(cfg, plans, fuzzCerts{}, metrics.New(), zap.NewNop())
	if err != nil {
		f.Fatal(err)
	}
	s.ctx = context.Background()
	s.udp = udp
	s.branchPrefix = "z9hG4bKumrfuzz."
	fh := &fuzzHandler{s: s, rec: &recordingConn{}, backend: backend, sink: sink}
	conn := func(g *Gateway) *streamConn {
		c := &streamConn{id: s.connSeq.Add(1), conn: fh.rec, tp: "TLS", remote: netip.MustParseAddrPort(g.Address + ":5999")}
		c.peerGen = s.rt().gen
		c.who.Store(&peer{side: sideGateway, gateway: g, names: []string{g.Address}})
		s.addConn(c)
		return c
	}
	fh.open, fh.secured = conn(s.rt().byName["gw1"]), conn(s.rt().byName["gw2"])
	return fh
}

// reset forgets what the previous input left: transactions, dialogs,
// branch numbers, metric series labelled by method, recorded writes, and
// connections a refusal closed.
func (fh *fuzzHandler) reset() {
	s := fh.s
	s.txs.init()
	s.dialogs.init()
	s.branchSeq.Store(0)
	s.m.Requests.Reset()
	s.m.Responses.Reset()
	fh.rec.writes = nil
	for _, c := range []*streamConn{fh.open, fh.secured} {
		c.closed.Store(false)
		c.closeAfterWrite.Store(false)
	}
}

// recordingConn is a gateway connection that keeps what umrouter writes.
type recordingConn struct{ writes [][]byte }

func (c *recordingConn) Read([]byte) (int, error) { return 0, io.EOF }
func (c *recordingConn) Write(b []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(b))
	return len(b), nil
}
func (c *recordingConn) Close() error { return nil }
func (c *recordingConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5061}
}
func (c *recordingConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5999}
}
func (c *recordingConn) SetDeadline(time.Time) error      { return nil }
func (c *recordingConn) SetReadDeadline(time.Time) error  { return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error { return nil }

// fuzzCerts stands in for tlsmgr: the handler never handshakes.
type fuzzCerts struct{}

func (fuzzCerts) ServerConfig() *tls.Config       { return &tls.Config{} }
func (fuzzCerts) ClientConfig(string) *tls.Config { return &tls.Config{} }
func (fuzzCerts) SelfSigned() bool                { return false }
