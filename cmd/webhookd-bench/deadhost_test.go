package main

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// waitFor polls cond for up to 10 s: connection closes reach the dead
// host asynchronously. The bound is a hang guard, not a measurement.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDeadHostCountsConnections(t *testing.T) {
	h, err := newDeadHost()
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	addr := strings.TrimPrefix(h.url, "http://")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	steps := []struct {
		name                     string
		dial, hangUp             int // new connections; client-side closes (oldest first)
		open, peak, accepted     int64
		requestGetsNoAnswerCheck bool
	}{
		{name: "three connect", dial: 3, open: 3, peak: 3, accepted: 3, requestGetsNoAnswerCheck: true},
		{name: "two hang up", hangUp: 2, open: 1, peak: 3, accepted: 3},
		{name: "one more", dial: 1, open: 2, peak: 3, accepted: 4},
		{name: "all hang up", hangUp: 2, open: 0, peak: 3, accepted: 4},
		{name: "four at once beat the peak", dial: 4, open: 4, peak: 4, accepted: 8},
	}
	for _, st := range steps {
		for range st.dial {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		for range st.hangUp {
			conns[0].Close()
			conns = conns[1:]
		}
		waitFor(t, st.name, func() bool { return h.open.Load() == st.open && h.accepted.Load() == st.accepted })
		if p := h.peak.Load(); p != st.peak {
			t.Errorf("%s: peak %d, want %d", st.name, p, st.peak)
		}
		if st.requestGetsNoAnswerCheck {
			c := conns[0]
			if _, err := c.Write([]byte("POST /s/0 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			var b [1]byte
			if n, err := c.Read(b[:]); n != 0 || !isTimeout(err) {
				t.Errorf("%s: a dead host answered (%d bytes, %v)", st.name, n, err)
			}
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestDeadHostRevive(t *testing.T) {
	shape := newEventShape("dtest", 64)
	l := newLedger(2, []bool{false})
	b := newBook(l, shape)
	s, sec := newSecret(t)
	if err := b.setSecret(0, s); err != nil {
		t.Fatal(err)
	}
	h, err := newDeadHost()
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()

	// A delivery in flight while dead: its connection is held, unanswered
	// and not booked.
	hung, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	if _, err := hung.Write([]byte("POST /s/0 HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the hung connection", func() bool { return h.open.Load() == 1 })

	h.revive(b, 0, 2)
	h.revive(b, 0, 2) // a second call is a no-op
	if n := h.open.Load(); n != 0 {
		t.Errorf("%d hung connections left after revive", n)
	}
	_ = hung.SetReadDeadline(time.Now().Add(10 * time.Second))
	var one [1]byte
	if n, err := hung.Read(one[:]); n != 0 || err == nil || isTimeout(err) {
		t.Errorf("hung connection after revive: %d bytes, %v; want it closed", n, err)
	}
	if u, _ := l.subCounts(0); u != 0 || h.first.Load() != 0 {
		t.Fatalf("booked %d deliveries while dead", u)
	}

	// send addresses a receiver; the revived host answers on its URL.
	as := &receiver{url: h.url, book: b}
	c := &http.Client{}
	defer c.CloseIdleConnections()
	cases := []struct {
		name     string
		id       string
		seq      int
		code     int
		complete bool
	}{
		{"first delivery", "msg_1", 0, 204, false},
		{"retry of it", "msg_1", 0, 204, false},
		{"the second event completes it", "msg_2", 1, 204, true},
	}
	for _, tc := range cases {
		if got := send(t, c, as, "/s/0", tc.id, tc.seq, sec, nil); got != tc.code {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.code)
		}
		if h.first.Load() == 0 || (h.complete.Load() != 0) != tc.complete {
			t.Errorf("%s: first %d complete %d", tc.name, h.first.Load(), h.complete.Load())
		}
	}
	if u, dups := l.subCounts(0); u != 2 || dups != 1 {
		t.Errorf("ledger: %d unique, %d duplicates; want 2, 1", u, dups)
	}
	if h.accepted.Load() != 1 || h.peak.Load() != 1 {
		t.Errorf("connections served after revival count as hung: accepted %d peak %d", h.accepted.Load(), h.peak.Load())
	}
}
