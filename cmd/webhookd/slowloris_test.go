package main

import (
	"net"
	"net/http"
	"testing"
	"time"
)

// TestSlowlorisCannotExhaustAPI: clients that open connections and send
// headers a trickle at a time neither block real clients nor keep their
// connections past the header timeout.
func TestSlowlorisCannotExhaustAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("takes the API's 5 s header timeout")
	}
	d := newDaemon(t)
	d.start()
	const n = 300
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", d.httpAddr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// Real clients are still served while the slow ones hang on.
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + d.httpAddr + "/healthz")
	if err != nil {
		t.Fatalf("a normal request failed next to %d slow clients: %v", n, err)
	}
	resp.Body.Close()
	// The server drops every slow client once its header timeout passes.
	deadline := time.Now().Add(15 * time.Second)
	closed := 0
	buf := make([]byte, 256)
	for _, sc := range conns {
		_ = sc.SetReadDeadline(deadline)
		for {
			if _, err := sc.Read(buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("a slow connection was still open after 15 s")
				}
				closed++
				break
			}
		}
	}
	t.Logf("slowloris: %d slow connections, a normal request served meanwhile, all %d closed by the server", n, closed)
}
