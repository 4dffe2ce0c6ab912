package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/webhookd/webhookd/dispatcher/signature"
)

// post sends event seq to subscription 0 of url, giving up after limit;
// 0 means no answer in time.
func postWithin(t *testing.T, c *http.Client, b *book, url, id string, seq int, sec signature.Secret, limit time.Duration) int {
	t.Helper()
	body := b.shape.appendBody(nil, seq, time.Now())
	ts := time.Now().Unix()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/s/0", bytes.NewReader(body))
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", sec.Sign(id, ts, body))
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestTurningHost(t *testing.T) {
	l := newLedger(3, []bool{false})
	b := newBook(l, newEventShape("ttest", 64))
	s, sec := newSecret(t)
	if err := b.setSecret(0, s); err != nil {
		t.Fatal(err)
	}
	h, err := newTurningHost(b)
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer c.CloseIdleConnections()

	steps := []struct {
		name   string
		do     func()
		id     string
		seq    int
		status int // 0: no answer
		booked int64
	}{
		{name: "healthy at first: answered and booked", id: "msg_0", seq: 0, status: 204, booked: 1},
		{name: "turned: the open keep-alive connection gets no answer", do: h.turn, id: "msg_1", seq: 1, status: 0, booked: 1},
		{name: "turned: a new connection gets none either", id: "msg_1", seq: 1, status: 0, booked: 1},
		{name: "revived: answered and booked", do: func() { h.revive(b, 0, 3) }, id: "msg_1", seq: 1, status: 204, booked: 2},
		{name: "revived: the last missed one completes it", id: "msg_2", seq: 2, status: 204, booked: 3},
	}
	for _, st := range steps {
		if st.do != nil {
			st.do()
		}
		if got := postWithin(t, c, b, h.url, st.id, st.seq, sec, 300*time.Millisecond); got != st.status {
			t.Errorf("%s: status %d, want %d", st.name, got, st.status)
		}
		if u, _ := l.subCounts(0); u != st.booked {
			t.Errorf("%s: %d booked, want %d", st.name, u, st.booked)
		}
		if st.name == "turned: the open keep-alive connection gets no answer" && (h.accepted.Load() != 0 || h.open.Load() != 0) {
			t.Errorf("%s: the healthy phase's connection counts as hung: accepted %d open %d", st.name, h.accepted.Load(), h.open.Load())
		}
	}
	if h.accepted.Load() != 1 || h.peak.Load() < 1 || h.first.Load() == 0 || h.complete.Load() == 0 {
		t.Errorf("accepted %d (want 1: the one after the turn), peak %d, first %d, complete %d",
			h.accepted.Load(), h.peak.Load(), h.first.Load(), h.complete.Load())
	}
	waitFor(t, "no connection open but the revived one's", func() bool { return h.open.Load() == 0 && h.preOpen() == 0 })
}

// TestTurningHostCountsItsHealthyConnections: connections opened while
// healthy are open connections to the host; the peak starts at the turn.
func TestTurningHostCountsItsHealthyConnections(t *testing.T) {
	h, err := newTurningHost(newBook(newLedger(1, []bool{false}), newEventShape("t2", 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	addr := strings.TrimPrefix(h.url, "http://")
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := dial(), dial()
	defer a.Close()
	defer b.Close()
	waitFor(t, "two healthy-phase connections", func() bool { return h.openConns() == 2 })
	if h.peak.Load() != 0 || h.accepted.Load() != 0 {
		t.Errorf("before the turn: peak %d accepted %d, want 0 0", h.peak.Load(), h.accepted.Load())
	}
	h.turn()
	if h.peak.Load() != 2 {
		t.Errorf("at the turn: peak %d, want the 2 held", h.peak.Load())
	}
	c := dial()
	defer c.Close()
	waitFor(t, "the hung connection", func() bool { return h.openConns() == 3 && h.accepted.Load() == 1 })
	if h.peak.Load() != 3 {
		t.Errorf("after the turn: peak %d, want 3", h.peak.Load())
	}
}

func TestDeadSetTurns(t *testing.T) {
	d, err := newDeadSet(2, 1, newBook(newLedger(1, []bool{true, false, false}), newEventShape("t3", 0)), 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	d.startSampling(time.Now())
	waitFor(t, "the turn", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return !d.turnedAt.IsZero()
	})
	for i, h := range d.hosts {
		if !h.turned.Load() {
			t.Errorf("host %d did not turn", i)
		}
	}
	d.endPublishing()
	r := d.connStats()
	if r.TurnAfterSeconds != 0.05 || r.TurnedAtSeconds == nil || *r.TurnedAtSeconds < 0.05 || r.WindowFromSeconds < *r.TurnedAtSeconds {
		t.Errorf("turn figures: %+v", r)
	}
	// A set that never turns (publishing ended first) has no turn time.
	e, err := newDeadSet(1, 0, newBook(newLedger(1, []bool{false}), newEventShape("t4", 0)), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	e.startSampling(time.Now())
	e.endPublishing()
	if r := e.connStats(); r.TurnedAtSeconds != nil || e.hosts[0].turned.Load() {
		t.Errorf("turned although publishing ended first: %+v", r)
	}
}
