package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawServer answers every request on a connection with answer(n), n
// counting the requests on that connection from 1, and records each
// request's head. It speaks HTTP/1.1 by hand, so a test can send what a
// real server's library would not.
type rawServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns int
	live  []net.Conn
	heads []string
}

// closeAll closes the server side of every connection accepted so far.
func (s *rawServer) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.live {
		_ = c.Close()
	}
	s.live = nil
}

func newRawServer(t *testing.T, answer func(n int) string) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			s.live = append(s.live, c)
			s.mu.Unlock()
			go s.serve(c, answer)
		}
	}()
	return s
}

func (s *rawServer) serve(c net.Conn, answer func(n int) string) {
	defer c.Close()
	br := bufio.NewReader(c)
	for n := 1; ; n++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		var head strings.Builder
		_ = req.Header.Write(&head)
		_, _ = io.Copy(io.Discard, req.Body)
		s.mu.Lock()
		s.heads = append(s.heads, req.Method+" "+req.RequestURI+"\n"+head.String())
		s.mu.Unlock()
		a := answer(n)
		if _, err := io.WriteString(c, a); err != nil {
			return
		}
		if strings.Contains(a, "Connection: close") {
			return
		}
	}
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() }

func (s *rawServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

const ok204 = "HTTP/1.1 204 No Content\r\n\r\n"

// TestPlainHTTPConnections: the plain-http transport reuses a connection
// only when it may, and gets past what servers do to kept-alive ones.
func TestPlainHTTPConnections(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answer    func(n int) string
		wantConns int // after three requests
	}{
		{"keep-alive reused", func(int) string { return ok204 }, 1},
		{"body read to its end", func(int) string { return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" }, 1},
		{"chunked body", func(int) string {
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
		}, 1},
		{"server asks to close", func(int) string { return "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n" }, 3},
		{"HTTP/1.0 answer", func(int) string { return "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n" }, 3},
		{"100 Continue before the answer", func(int) string { return "HTTP/1.1 100 Continue\r\n\r\n" + ok204 }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newRawServer(t, tc.answer)
			c := newClient(t, Config{Guard: open})
			for i := range 3 {
				resp, err := post(t, c, s.url())
				if err != nil {
					t.Fatalf("request %d: %v", i+1, err)
				}
				if err := Drain(resp.Body, 1024); err != nil {
					t.Fatalf("request %d: drain: %v", i+1, err)
				}
				if resp.StatusCode/100 != 2 {
					t.Fatalf("request %d: status %d", i+1, resp.StatusCode)
				}
			}
			if got := s.connections(); got != tc.wantConns {
				t.Errorf("%d connections for 3 requests, want %d", got, tc.wantConns)
			}
		})
	}
}

// TestPlainHTTPClosedIdleConnectionNotReused: a kept-alive connection the
// server closed while it was idle is noticed before reuse, so the next
// request goes out on a new one instead of failing.
func TestPlainHTTPClosedIdleConnectionNotReused(t *testing.T) {
	s := newRawServer(t, func(int) string { return ok204 })
	c := newClient(t, Config{Guard: open})
	resp, err := post(t, c, s.url())
	if err != nil {
		t.Fatal(err)
	}
	_ = Drain(resp.Body, 1024)
	s.closeAll()
	// Loopback delivers the server's FIN at once; this only lets the
	// client's kernel see it before the next request looks.
	time.Sleep(100 * time.Millisecond)
	resp, err = post(t, c, s.url())
	if err != nil {
		t.Fatalf("request after the server closed the idle connection: %v", err)
	}
	_ = Drain(resp.Body, 1024)
	if got := s.connections(); got != 2 {
		t.Errorf("%d connections, want 2 (the dead idle one was not reused)", got)
	}
}

// TestPlainHTTPRequestHead: what the plain-http transport writes.
func TestPlainHTTPRequestHead(t *testing.T) {
	s := newRawServer(t, func(int) string { return ok204 })
	c := newClient(t, Config{Guard: open})
	u := strings.Replace(s.url(), "http://", "http://user:p%40ss@", 1) + "/hook/1?x=a%20b"
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u, strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Webhook-Id", "msg_1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = Drain(resp.Body, 1024)
	s.mu.Lock()
	head := s.heads[0]
	s.mu.Unlock()
	for _, want := range []string{"POST /hook/1?x=a%20b\n", "Webhook-Id: msg_1\r\n", "Content-Length: 7\r\n",
		"Authorization: Basic dXNlcjpwQHNz\r\n"} {
		if !strings.Contains(head, want) {
			t.Errorf("request head lacks %q:\n%s", want, head)
		}
	}
	bad, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, s.url(), strings.NewReader("{}"))
	bad.Header.Set("X-Split", "a\r\nInjected: 1")
	if _, err := c.Do(bad); err == nil {
		t.Error("a header value with CR LF was sent")
	}
}

// TestPlainHTTPHeaderTooLarge: a receiver cannot make the client buffer an
// endless response header.
func TestPlainHTTPHeaderTooLarge(t *testing.T) {
	huge := fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Big: %s\r\n\r\n", strings.Repeat("x", 2*maxResponseHeaderBytes))
	s := newRawServer(t, func(int) string { return huge })
	c := newClient(t, Config{Guard: open})
	if _, err := post(t, c, s.url()); err == nil || !strings.Contains(err.Error(), "header too large") {
		t.Fatalf("err = %v, want the header refused as too large", err)
	}
}

// TestPlainHTTPDripTimesOut: a receiver sending its status line a byte at
// a time is cut off at the deadline, reported as a timeout (not as the
// malformed line that arrived before it).
func TestPlainHTTPDripTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = http.ReadRequest(bufio.NewReader(c))
		for _, b := range []byte("HTTP/1.1 200 OK\r\n\r\n") {
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	c := newClient(t, Config{Guard: open, Timeout: 300 * time.Millisecond})
	_, err = post(t, c, "http://"+ln.Addr().String())
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err = %v, want a timeout", err)
	}
}

// TestPlainHTTPWaitsForAConnection: requests beyond a host's connection
// cap wait for one to come free and reuse it, instead of timing out.
func TestPlainHTTPWaitsForAConnection(t *testing.T) {
	s := newRawServer(t, func(int) string { time.Sleep(20 * time.Millisecond); return ok204 })
	c := newClient(t, Config{Guard: open, MaxConnsPerHost: 1, Timeout: 5 * time.Second})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			resp, err := post(t, c, s.url())
			if err == nil {
				err = Drain(resp.Body, 1024)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := s.connections(); got != 1 {
		t.Errorf("%d connections with a cap of 1", got)
	}
}
