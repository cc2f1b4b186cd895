package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// maxMessage bounds one SIP message read from a stream.
const maxMessage = 64 << 10

var errTooLarge = errors.New("SIP message larger than 64 KiB")

// streamReader cuts a SIP byte stream (RFC 3261 §18.3) into messages:
// headers up to the empty line, then Content-Length bytes of body.
// Leading CRLFs (keep-alives and their answers) are skipped.
type streamReader struct {
	r    io.Reader
	buf  []byte
	head int // start of unread data
	tail int // end of unread data
}

func newStreamReader(r io.Reader) *streamReader {
	return &streamReader{r: r, buf: make([]byte, 16<<10)}
}

// next returns the next message; the slice is valid until the next call.
func (s *streamReader) next() ([]byte, error) {
	for {
		// Skip keep-alive CRLFs between messages.
		for s.head < s.tail && (s.buf[s.head] == '\r' || s.buf[s.head] == '\n') {
			s.head++
		}
		if n, err := s.complete(); err != nil {
			return nil, err
		} else if n > 0 {
			frame := s.buf[s.head : s.head+n]
			s.head += n
			return frame, nil
		}
		if err := s.fill(); err != nil {
			return nil, err
		}
	}
}

// complete returns the length of the complete message at head, or 0.
func (s *streamReader) complete() (int, error) {
	data := s.buf[s.head:s.tail]
	end := bytes.Index(data, crlfcrlf)
	if end < 0 {
		if len(data) >= maxMessage {
			return 0, errTooLarge
		}
		return 0, nil
	}
	cl, err := contentLength(data[:end+2])
	if err != nil {
		return 0, err
	}
	n := end + 4 + cl
	if n > maxMessage {
		return 0, errTooLarge
	}
	if len(data) < n {
		return 0, nil
	}
	return n, nil
}

// fill reads more bytes, moving unread data to the front first.
func (s *streamReader) fill() error {
	if s.head > 0 {
		copy(s.buf, s.buf[s.head:s.tail])
		s.tail -= s.head
		s.head = 0
	}
	if s.tail == len(s.buf) {
		if len(s.buf) >= maxMessage+4096 {
			return errTooLarge
		}
		nb := make([]byte, 2*len(s.buf))
		copy(nb, s.buf[:s.tail])
		s.buf = nb
	}
	n, err := s.r.Read(s.buf[s.tail:])
	s.tail += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// contentLength finds Content-Length (or l) in a header block; a stream
// message without it is an error (RFC 3261 §18.3).
func contentLength(head []byte) (int, error) {
	for len(head) > 0 {
		nl := bytes.Index(head, crlf)
		if nl < 0 {
			break
		}
		line := head[:nl]
		head = head[nl+2:]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		if !isName(bytes.TrimRight(line[:colon], " \t"), "Content-Length", "l") {
			continue
		}
		v := bytes.TrimSpace(line[colon+1:])
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid Content-Length %q", v)
		}
		return n, nil
	}
	return 0, errors.New("no Content-Length on a stream")
}
