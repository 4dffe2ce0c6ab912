package transport

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"time"
)

// h1Transport carries requests to plain-http receivers: HTTP/1.1 with
// keep-alive, each request written and its answer read on the caller's
// goroutine. net/http's Transport runs a reader and a writer goroutine per
// connection and hands every request and response between them and the
// caller; at thousands of deliveries a second those hand-offs cost more
// CPU than the requests themselves. https receivers keep net/http's
// transport, for its TLS session handling and HTTP/2.
//
// The limits are the same as net/http's transport is given: at most
// maxConns connections to a host (idle ones included), response headers
// capped, idle connections closed after idleTimeout. A connection is
// reused only after its response was read to the end and neither side
// asked to close it, and only if the peer has not closed it meanwhile
// (checked without blocking before reuse).
type h1Transport struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxConns    int
	maxHeader   int64
	idleTimeout time.Duration

	mu      sync.Mutex
	hosts   map[string]*h1Host
	reaping bool // an idle-connection reap is scheduled; guarded by mu
}

// h1Host is one destination's connections.
type h1Host struct {
	addr  string
	slots chan struct{} // one token per open connection
	// Guarded by h1Transport.mu.
	idle []*h1Conn     // most recently used last
	wake chan struct{} // when not nil, closed once a connection is idle or a slot free
}

type h1Conn struct {
	conn      net.Conn
	cap       capReader // under br: bounds the response header
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

// bufSize is each connection's read and write buffer.
const bufSize = 4 << 10

// errHeaderTooLarge: the response header is over maxResponseHeaderBytes.
var errHeaderTooLarge = errors.New("transport: response header too large")

// capReader fails reads once n bytes were read: it bounds what a receiver
// can make us buffer before its response header ends.
type capReader struct {
	r io.Reader
	n int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

// handles reports whether the request is one h1Transport carries: plain
// http with a body of known length.
func (t *h1Transport) handles(req *http.Request) bool {
	return req.URL.Scheme == "http" && (req.Body == nil || req.Body == http.NoBody || req.ContentLength >= 0)
}

func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	c, h, reused, err := t.conn(ctx, addr)
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.GotConn != nil {
		trace.GotConn(httptrace.GotConnInfo{Conn: c.conn, Reused: reused, WasIdle: reused})
	}
	if d, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(d)
	}
	// A cancelled request unblocks its reads and writes at once.
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		t.discard(c, h)
		// A read cut off by the deadline can surface as a parse error of
		// what arrived before it, and the context's own timer may fire a
		// moment after the connection's: the deadline is the cause then,
		// reported as net/http does (a net.Error whose Timeout is true).
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			err = context.DeadlineExceeded
		} else if ctx.Err() != nil {
			err = ctx.Err()
		} else if reused && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			err = fmt.Errorf("transport: the receiver closed a kept-alive connection: %w", err)
		}
		return nil, err
	}
	if err := writeRequest(c.bw, req); err != nil {
		return fail(err)
	}
	c.cap.n = t.maxHeader + bufSize // the bufio read-ahead counts too
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			return fail(err)
		}
		// 1xx answers other than 101 precede the real one.
		if resp.StatusCode >= 200 || resp.StatusCode < 100 {
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return fail(errors.New("transport: receiver switched protocols"))
		}
	}
	c.cap.n = math.MaxInt64
	resp.Body = &h1Body{rc: resp.Body, t: t, c: c, h: h, stop: stop,
		keep: !resp.Close && !req.Close, eof: resp.Body == http.NoBody}
	return resp, nil
}

// writeRequest writes req's head and body. Header values are webhookd's
// own; a CR or LF in one would split the request, so it is refused.
func writeRequest(w *bufio.Writer, req *http.Request) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	w.WriteString(req.Method)
	w.WriteByte(' ')
	w.WriteString(req.URL.RequestURI())
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\n")
	if u := req.URL.User; u != nil && req.Header.Get("Authorization") == "" {
		pass, _ := u.Password()
		w.WriteString("Authorization: Basic ")
		w.WriteString(base64.StdEncoding.EncodeToString([]byte(u.Username() + ":" + pass)))
		w.WriteString("\r\n")
	}
	for k, vs := range req.Header {
		switch strings.ToLower(k) {
		case "host", "content-length", "transfer-encoding", "connection":
			continue
		}
		if !validName(k) {
			return fmt.Errorf("transport: invalid header name %q", k)
		}
		for _, v := range vs {
			if !validValue(v) {
				return fmt.Errorf("transport: invalid value of header %s", k)
			}
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
	n := req.ContentLength
	if req.Body == nil || req.Body == http.NoBody {
		n = 0
	}
	w.WriteString("Content-Length: ")
	w.WriteString(strconv.FormatInt(n, 10))
	w.WriteString("\r\n\r\n")
	if n > 0 {
		copied, err := io.CopyN(w, req.Body, n)
		if err != nil {
			_ = req.Body.Close()
			return fmt.Errorf("transport: write request body (%d of %d bytes): %w", copied, n, err)
		}
	}
	if req.Body != nil {
		_ = req.Body.Close()
	}
	return w.Flush()
}

// validName reports whether k is an HTTP token (RFC 9110, 5.6.2).
func validName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validValue reports whether v holds no control character but tab: a CR
// or LF in a value would split the request.
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// h1Body hands its connection back for reuse once read to the end, or
// closes it.
type h1Body struct {
	rc   io.ReadCloser
	t    *h1Transport
	c    *h1Conn
	h    *h1Host
	stop func() bool
	keep bool // neither side asked to close the connection
	eof  bool
	done bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	ended := b.stop() // false once the request's context ended
	if !b.eof {
		// Closing the body itself would read the rest of it: cut it off.
		b.t.discard(b.c, b.h)
		return nil
	}
	err := b.rc.Close()
	// A request whose context ended may have had its deadline forced into
	// the past: its connection is not reused.
	if ended && b.keep && err == nil && b.c.br.Buffered() == 0 {
		b.t.put(b.c, b.h)
		return nil
	}
	b.t.discard(b.c, b.h)
	return err
}

func (t *h1Transport) host(addr string) *h1Host {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.hosts[addr]
	if h == nil {
		if t.hosts == nil {
			t.hosts = make(map[string]*h1Host)
		}
		h = &h1Host{addr: addr, slots: make(chan struct{}, t.maxConns)}
		t.hosts[addr] = h
	}
	return h
}

// conn returns an idle connection to addr that is still open, or dials a
// new one once the host has a free slot, whichever comes first.
func (t *h1Transport) conn(ctx context.Context, addr string) (*h1Conn, *h1Host, bool, error) {
	h := t.host(addr)
	for {
		t.mu.Lock()
		if n := len(h.idle); n > 0 {
			c := h.idle[n-1]
			h.idle[n-1] = nil
			h.idle = h.idle[:n-1]
			t.mu.Unlock()
			if time.Since(c.idleSince) < t.idleTimeout && alive(c.conn) {
				return c, h, true, nil
			}
			t.discard(c, h)
			continue
		}
		select {
		case h.slots <- struct{}{}:
			t.mu.Unlock()
			conn, err := t.dial(ctx, "tcp", addr)
			if err != nil {
				t.release(h)
				return nil, nil, false, err
			}
			c := &h1Conn{conn: conn, bw: bufio.NewWriterSize(conn, bufSize)}
			c.cap.r = conn
			c.br = bufio.NewReaderSize(&c.cap, bufSize)
			return c, h, false, nil
		default:
		}
		if h.wake == nil {
			h.wake = make(chan struct{})
		}
		wake := h.wake
		t.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, nil, false, ctx.Err()
		}
	}
}

// wakeLocked tells requests waiting for one of h's connections that one
// may be free. Caller holds t.mu.
func (h *h1Host) wakeLocked() {
	if h.wake != nil {
		close(h.wake)
		h.wake = nil
	}
}

// put makes c idle for reuse, unless its host entry was forgotten
// meanwhile (see closeIdle): no one would find it there, so it is closed.
func (t *h1Transport) put(c *h1Conn, h *h1Host) {
	_ = c.conn.SetDeadline(time.Time{})
	c.idleSince = time.Now()
	t.mu.Lock()
	if t.hosts[h.addr] != h {
		t.mu.Unlock()
		t.discard(c, h)
		return
	}
	h.idle = append(h.idle, c)
	h.wakeLocked()
	if !t.reaping {
		t.reaping = true
		time.AfterFunc(t.idleTimeout, t.reap)
	}
	t.mu.Unlock()
}

// discard closes c and frees its slot.
func (t *h1Transport) discard(c *h1Conn, h *h1Host) {
	_ = c.conn.Close()
	t.release(h)
}

func (t *h1Transport) release(h *h1Host) {
	<-h.slots
	t.mu.Lock()
	h.wakeLocked()
	t.mu.Unlock()
}

// reap closes the connections idle for longer than idleTimeout, and
// runs again while any connection is idle.
func (t *h1Transport) reap() {
	t.closeIdle(time.Now().Add(-t.idleTimeout))
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reaping = false
	for _, h := range t.hosts {
		if len(h.idle) > 0 {
			t.reaping = true
			time.AfterFunc(t.idleTimeout, t.reap)
			return
		}
	}
}

// closeIdle closes the idle connections that went idle before cutoff,
// and forgets hosts left with no connection. (A request that looked its
// host up just before may then open a connection on the forgotten entry
// beside a new one's: the dispatcher's lanes, not this, are what bound
// connections per host; this cap is the backstop. put closes such a
// connection rather than keep it where no one looks.)
func (t *h1Transport) closeIdle(cutoff time.Time) {
	type closing struct {
		c *h1Conn
		h *h1Host
	}
	var cs []closing
	t.mu.Lock()
	for _, h := range t.hosts {
		keep := h.idle[:0]
		for _, c := range h.idle {
			if c.idleSince.Before(cutoff) {
				cs = append(cs, closing{c, h})
			} else {
				keep = append(keep, c)
			}
		}
		clear(h.idle[len(keep):])
		h.idle = keep
	}
	t.mu.Unlock()
	for _, x := range cs {
		t.discard(x.c, x.h)
	}
	t.mu.Lock()
	for addr, h := range t.hosts {
		if len(h.idle) == 0 && len(h.slots) == 0 {
			delete(t.hosts, addr)
		}
	}
	t.mu.Unlock()
}

// CloseIdleConnections closes every idle connection.
func (t *h1Transport) CloseIdleConnections() { t.closeIdle(time.Now().Add(time.Hour)) }
