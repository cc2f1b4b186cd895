package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
)

// Framing errors. Each ends the connection: once framing is lost on a stream
// there is no message boundary to resynchronise on.
var (
	errMessageTooLarge  = errors.New("message exceeds limits.max_message_bytes")
	errTooManyHeaders   = errors.New("too many header lines")
	errNoContentLength  = errors.New("no Content-Length on a stream transport")
	errBadContentLength = errors.New("invalid Content-Length")
)

// maxHeaderLines bounds a header flood independently of the byte limit.
const maxHeaderLines = 256

// frameReader cuts a byte stream into SIP messages (RFC 3261 §7.5, §18.3):
// headers up to the empty line, then exactly Content-Length bytes of body.
// It enforces the size and header-count limits while reading, so a peer can
// never make it buffer more than maxBytes.
type frameReader struct {
	r        *bufio.Reader
	maxBytes int
	buf      []byte
	// src is what await reads from (the connection); first and pre carry
	// the byte it waited for into the next read buffer.
	src   io.Reader
	first [1]byte
	pre   prefixReader
	// pong is called when the peer sent a CRLFCRLF keep-alive (RFC 5626 §4.4.1).
	pong func()
	// started, when set, is called when the first byte of a message has
	// arrived: the read loop then bounds the rest of the message in time.
	started func()
	// idle, when set, is called after a keep-alive: the connection is idle
	// again, not in the middle of a message.
	idle func()
}

// Buffers an idle connection gives back while it waits (see await).
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}
	frames  sync.Pool // of *[]byte
)

// buffered reports whether bytes of the next message are already read.
func (f *frameReader) buffered() bool { return f.r != nil && f.r.Buffered() > 0 }

// await waits for the first byte of the next message holding no read
// buffer: most connections are idle most of the time (a gateway's
// connection carries a call now and then), and each would otherwise keep
// its read buffer and its largest message's buffer while it waits. Call it
// only when nothing is buffered.
func (f *frameReader) await() error {
	if f.r != nil {
		f.r.Reset(nil)
		readers.Put(f.r)
		f.r = nil
	}
	if f.buf != nil {
		b := f.buf[:0]
		frames.Put(&b)
		f.buf = nil
	}
	n, err := f.src.Read(f.first[:])
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	f.pre = prefixReader{b: f.first[:n], r: f.src}
	f.r = readers.Get().(*bufio.Reader)
	f.r.Reset(&f.pre)
	if b, ok := frames.Get().(*[]byte); ok {
		f.buf = *b
	}
	return nil
}

// prefixReader reads b, then r.
type prefixReader struct {
	b []byte
	r io.Reader
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if len(p.b) > 0 {
		n := copy(b, p.b)
		p.b = p.b[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// partial returns what was read of the message that failed, for an error
// response built from its headers.
func (f *frameReader) partial() []byte { return f.buf }

// next returns the next message. The returned slice is valid until the next call.
func (f *frameReader) next() ([]byte, error) {
	f.buf = f.buf[:0]
	contentLength := -1
	lines := 0
	blank := 0
	for {
		if len(f.buf) == 0 && f.started != nil {
			if _, err := f.r.Peek(1); err != nil {
				return nil, err
			}
			f.started()
		}
		line, err := f.readLine()
		if err != nil {
			return nil, err
		}
		if len(f.buf) == 0 {
			// Before the start line: CRLFs are keep-alives and are ignored.
			if len(bytes.TrimRight(line, "\r\n")) == 0 {
				blank++
				if blank == 2 && f.pong != nil {
					f.pong()
					blank = 0
				}
				if f.idle != nil {
					f.idle()
				}
				continue
			}
		}
		if len(f.buf)+len(line) > f.maxBytes {
			return nil, errMessageTooLarge
		}
		f.buf = append(f.buf, line...)
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			break // end of headers
		}
		lines++
		if lines > maxHeaderLines {
			return nil, errTooManyHeaders
		}
		if n, ok, err := contentLengthOf(trimmed); ok {
			if err != nil {
				return nil, err
			}
			if contentLength >= 0 && n != contentLength {
				// Two lengths: the message has no single end (RFC 4475 3.3.9).
				return nil, fmt.Errorf("%w: %d and %d", errBadContentLength, contentLength, n)
			}
			contentLength = n
		}
	}
	if contentLength < 0 {
		return nil, errNoContentLength
	}
	if len(f.buf)+contentLength > f.maxBytes {
		return nil, errMessageTooLarge
	}
	start := len(f.buf)
	f.buf = append(f.buf, make([]byte, contentLength)...)
	if _, err := io.ReadFull(f.r, f.buf[start:]); err != nil {
		return nil, err
	}
	return f.buf, nil
}

// readLine reads one line including its LF, refusing lines longer than the
// message limit (bufio.Reader.ReadSlice alone would grow without bound).
func (f *frameReader) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, err := f.r.ReadSlice('\n')
		if err == nil {
			if line == nil {
				return chunk, nil
			}
			return append(line, chunk...), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
		line = append(line, chunk...)
		if len(line)+len(f.buf) > f.maxBytes {
			return nil, errMessageTooLarge
		}
	}
}

// contentLengthOf reports whether line is a Content-Length header (long or
// compact form) and, if so, its value.
func contentLengthOf(line []byte) (n int, ok bool, err error) {
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return 0, false, nil
	}
	name := bytes.TrimSpace(line[:colon])
	if !bytes.EqualFold(name, []byte("Content-Length")) && !bytes.EqualFold(name, []byte("l")) {
		return 0, false, nil
	}
	v := bytes.TrimSpace(line[colon+1:])
	n, err = strconv.Atoi(string(v))
	if err != nil || n < 0 {
		return 0, true, fmt.Errorf("%w: %q", errBadContentLength, v)
	}
	return n, true, nil
}
