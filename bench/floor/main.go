// Command floor is the bench's "floor": a bare Go crypto/tls server with
// mutual TLS and no SIP logic beyond echoing the headers a response needs.
// It answers OPTIONS with 200, an INVITE with 100, 180 and 200 at once
// (stateless: no transaction, no dialog, no Record-Route), BYE with 200,
// and ignores ACK. What it costs per call-equivalent and per handshake is
// the least any TLS SIP server on this machine can cost: umrouter's
// figures are read against it.
//
//	floor -listen 127.0.0.1:35064 -cert server.crt -key server.key -ca ca.crt -d 10m
//
// It stops by itself after -d, or on SIGINT/SIGTERM.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:35064", "TLS `address`")
	cert := flag.String("cert", "", "server certificate `file` (PEM)")
	key := flag.String("key", "", "server key `file` (PEM)")
	ca := flag.String("ca", "", "CA `file` client certificates must chain to")
	dur := flag.Duration("d", 30*time.Minute, "serve for at most `D`")
	flag.Parse()
	if err := serve(*listen, *cert, *key, *ca, *dur); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func serve(addr, certFile, keyFile, caFile string, dur time.Duration) error {
	if dur <= 0 || dur > 24*time.Hour {
		return errors.New("-d: between 0 and 24h")
	}
	kp, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s: no certificate", caFile)
	}
	conf := &tls.Config{
		Certificates: []tls.Certificate{kp},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	go func() { <-ctx.Done(); ln.Close() }()
	fmt.Fprintf(os.Stderr, "floor: serving on %s\n", ln.Addr())
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: retry
			continue
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			handle(tls.Server(c, conf))
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
	mu.Lock()
	for c := range conns {
		c.Close()
	}
	mu.Unlock()
	wg.Wait()
	return nil
}

// handle serves one connection: handshake (bounded), then messages in order.
func handle(tc *tls.Conn) {
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		return
	}
	_ = tc.SetDeadline(time.Time{})
	local := tc.LocalAddr().String()
	r := bufio.NewReaderSize(tc, 4096)
	var m msg
	var out []byte
	for {
		if err := m.read(r); err != nil {
			return
		}
		out = m.answer(out[:0], local)
		if len(out) > 0 {
			if _, err := tc.Write(out); err != nil {
				return
			}
		}
	}
}

// msg is one request: its method and the header lines a response copies.
type msg struct {
	method []byte
	lines  [][]byte // Via, From, To, Call-ID, CSeq lines, in order
	buf    []byte
}

var errFraming = errors.New("bad framing")

func (m *msg) read(r *bufio.Reader) error {
	m.buf, m.lines, m.method = m.buf[:0], m.lines[:0], nil
	type span struct{ a, b int }
	var keep []span
	cl := -1
	start := -1
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		t := bytes.TrimRight(line, "\r\n")
		if start < 0 {
			if len(t) == 0 {
				continue // keep-alive CRLF
			}
			start = len(m.buf)
		} else if len(t) == 0 {
			break
		}
		if len(m.buf)+len(t) > 65536 {
			return errFraming
		}
		a := len(m.buf)
		m.buf = append(m.buf, t...)
		if a == start {
			continue
		}
		colon := bytes.IndexByte(t, ':')
		if colon <= 0 {
			continue
		}
		name := bytes.TrimSpace(t[:colon])
		switch {
		case is(name, "Via", "v"), is(name, "From", "f"), is(name, "To", "t"), is(name, "Call-ID", "i"), is(name, "CSeq", ""):
			keep = append(keep, span{a, len(m.buf)})
		case is(name, "Content-Length", "l"):
			n, err := strconv.Atoi(string(bytes.TrimSpace(t[colon+1:])))
			if err != nil || n < 0 || n > 65536 {
				return errFraming
			}
			cl = n
		}
	}
	if cl < 0 {
		return errFraming
	}
	if _, err := r.Discard(cl); err != nil {
		return err
	}
	first := m.buf[start:]
	if sp := bytes.IndexByte(first, ' '); sp > 0 {
		m.method = first[:sp]
	}
	for _, s := range keep {
		m.lines = append(m.lines, m.buf[s.a:s.b])
	}
	return nil
}

func (m *msg) answer(out []byte, local string) []byte {
	switch string(m.method) {
	case "ACK", "":
		return out
	case "INVITE":
		out = m.response(out, "100 Trying", "", "")
		out = m.response(out, "180 Ringing", ";tag=floor", local)
		return m.response(out, "200 OK", ";tag=floor", local)
	}
	return m.response(out, "200 OK", "", "")
}

func (m *msg) response(out []byte, status, toTag, contact string) []byte {
	out = append(out, "SIP/2.0 "...)
	out = append(out, status...)
	out = append(out, "\r\n"...)
	for _, l := range m.lines {
		out = append(out, l...)
		if toTag != "" && (bytes.HasPrefix(l, []byte("To:")) || bytes.HasPrefix(l, []byte("t:"))) && !bytes.Contains(l, []byte(";tag=")) {
			out = append(out, toTag...)
		}
		out = append(out, "\r\n"...)
	}
	if contact != "" {
		out = append(out, "Contact: <sip:floor@"...)
		out = append(out, contact...)
		out = append(out, ";transport=tls>\r\n"...)
	}
	return append(out, "Content-Length: 0\r\n\r\n"...)
}

// is reports whether a header name is long or its compact form.
func is(name []byte, long, compact string) bool {
	if len(name) == 1 {
		return compact != "" && (name[0]|0x20) == compact[0]
	}
	return bytes.EqualFold(name, []byte(long))
}
