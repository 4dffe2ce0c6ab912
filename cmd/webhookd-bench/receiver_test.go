package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/webhookd/webhookd/dispatcher/signature"
)

func newSecret(t *testing.T) (string, signature.Secret) {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	s := signature.SecretPrefix + base64.StdEncoding.EncodeToString(key)
	parsed, err := signature.ParseSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, parsed
}

// send posts a delivery of event seq to subscription path on r the way
// webhookd does, signing with sec; a non-nil body replaces the real one.
func send(t *testing.T, c *http.Client, r *receiver, path, id string, seq int, sec signature.Secret, body []byte) int {
	t.Helper()
	if body == nil {
		body = r.book.shape.appendBody(nil, seq, time.Now())
	}
	ts := time.Now().Unix()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.url+path, bytes.NewReader(body))
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", sec.Sign(id, ts, body))
	resp, err := c.Do(req)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestReceiverChecksEveryDelivery(t *testing.T) {
	shape := newEventShape("rtest", 256)
	l := newLedger(4, []bool{true, false, false})
	b := newBook(l, shape)
	s0, sec0 := newSecret(t)
	s1, sec1 := newSecret(t)
	_, other := newSecret(t)
	if err := b.setSecret(0, s0); err != nil {
		t.Fatal(err)
	}
	if err := b.setSecret(1, s1); err != nil {
		t.Fatal(err)
	}
	if err := b.setSecret(2, "not a secret!"); err == nil {
		t.Fatal("a malformed secret must be refused")
	}
	ok, err := newReceiver(healthy, b)
	if err != nil {
		t.Fatal(err)
	}
	defer ok.close()
	bad, err := newReceiver(failing, b)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.close()
	c := &http.Client{}
	forged := shape.appendBody(nil, 2, time.Now())
	forged[len(forged)-4] = 'y' // inside the padding
	cases := []struct {
		name string
		r    *receiver
		path string
		id   string
		seq  int
		sec  signature.Secret
		body []byte
		code int
	}{
		{"first delivery", ok, "/s/0", "msg_a", 0, sec0, nil, 204},
		{"retry, same id", ok, "/s/0", "msg_a", 0, sec0, nil, 204},
		{"retry, new id", ok, "/s/0", "msg_other", 0, sec0, nil, 409},
		{"wrong secret", ok, "/s/0", "msg_b", 1, other, nil, 401},
		{"signed but altered body", ok, "/s/0", "msg_c", 2, sec0, forged, 400},
		{"not a bench event", ok, "/s/0", "msg_d", 3, sec0, []byte(`{"type":"x"}`), 400},
		{"unknown subscription", ok, "/s/9", "msg_e", 1, sec0, nil, 404},
		{"not registered yet", ok, "/s/2", "msg_f", 1, sec0, nil, 404},
		{"not a subscription path", ok, "/x/0", "msg_g", 1, sec0, nil, 404},
		{"failing endpoint books, then 500", bad, "/s/1", "msg_h", 1, sec1, nil, 500},
	}
	for _, tc := range cases {
		if got := send(t, c, tc.r, tc.path, tc.id, tc.seq, tc.sec, tc.body); got != tc.code {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.code)
		}
	}
	got := l.tally(4, 4)
	want := Tally{Generated: 4, Published: 4, Fanout: 1, Expected: 4, Unique: 1, Lost: 3, Duplicates: 2,
		BadSignatures: 1, Unexpected: 4, BodyMismatch: 1, UnstableIDs: 1}
	if got != want {
		t.Errorf("tally\n got %+v\nwant %+v", got, want)
	}
	if u, _ := l.subCounts(1); u != 1 {
		t.Errorf("failing endpoint booked %d events, want 1", u)
	}
	if ok.attempts.Load() != 9 || ok.peakConns.Load() < 1 {
		t.Errorf("attempts %d, peak connections %d", ok.attempts.Load(), ok.peakConns.Load())
	}
}

func TestHangingAndTrapReceivers(t *testing.T) {
	shape := newEventShape("htest", 0)
	l := newLedger(2, []bool{false})
	b := newBook(l, shape)
	s, sec := newSecret(t)
	if err := b.setSecret(0, s); err != nil {
		t.Fatal(err)
	}
	hang, err := newReceiver(hanging, b)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int)
	go func() { done <- send(t, &http.Client{}, hang, "/s/0", "msg_1", 0, sec, nil) }()
	// The delivery is booked before the handler starts hanging.
	deadline := time.Now().Add(10 * time.Second)
	for u, _ := l.subCounts(0); u == 0; u, _ = l.subCounts(0) {
		if time.Now().After(deadline) {
			t.Fatal("hanging receiver never booked the delivery")
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case code := <-done:
		t.Fatalf("hanging receiver answered %d", code)
	default:
	}
	hang.close()
	if code := <-done; code != -1 {
		t.Errorf("closing a hanging receiver answered %d; it must abort the connection", code)
	}

	trapR, err := newReceiver(trap, b)
	if err != nil {
		t.Fatal(err)
	}
	defer trapR.close()
	if code := send(t, &http.Client{}, trapR, "/cold", "msg_2", 1, sec, nil); code != http.StatusGone {
		t.Errorf("trap answered %d, want 410", code)
	}
	if l.unexpected.Load() != 1 {
		t.Errorf("a call to the trap must count as unexpected (%d)", l.unexpected.Load())
	}
}

func TestBaseline(t *testing.T) {
	res, err := runBaseline(context.Background(), baselineConfig{Receivers: 2, Conns: 3, Requests: 301,
		MaxDuration: time.Minute, Shape: newEventShape("btest", 512)})
	if err != nil {
		t.Fatal(err)
	}
	// 301 over 2 receivers is 151 each.
	if res.Requests != 302 || res.PerSecond <= 0 || res.Conns != 3 || res.Latency.Count != 302 {
		t.Fatalf("%+v", res)
	}
}
