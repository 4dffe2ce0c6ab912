package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// ledger records deliveries per (subscription, event) and checks them.
type ledger struct {
	mu       sync.Mutex
	verify   map[string]*standardwebhooks.Webhook // path -> verifier
	seen     map[string]map[string]delivery       // path -> event -> first delivery
	dups     int
	badSig   int
	mismatch int
	total    int
}

type delivery struct{ id, body string }

func newLedger() *ledger {
	return &ledger{verify: map[string]*standardwebhooks.Webhook{}, seen: map[string]map[string]delivery{}}
}

func (l *ledger) handler(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	v := l.verify[r.URL.Path]
	if v == nil || v.Verify(body, r.Header) != nil {
		l.badSig++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	ev := eventKey(body)
	m := l.seen[r.URL.Path]
	if m == nil {
		m = map[string]delivery{}
		l.seen[r.URL.Path] = m
	}
	d := delivery{id: r.Header.Get("webhook-id"), body: string(body)}
	if prev, ok := m[ev]; ok {
		l.dups++
		if prev != d {
			l.mismatch++
		}
	} else {
		m[ev] = d
	}
	w.WriteHeader(http.StatusOK)
}

func eventKey(body []byte) string {
	// Bodies are {"type":...,"workflowId":"WF","workflowRunId":"run-N"}.
	const marker = `"workflowRunId":"`
	s := string(body)
	for i := 0; i+len(marker) <= len(s); i++ {
		if s[i:i+len(marker)] == marker {
			j := i + len(marker)
			for k := j; k < len(s); k++ {
				if s[k] == '"' {
					return s[j:k]
				}
			}
		}
	}
	return s
}

func (l *ledger) unique() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.seen {
		n += len(m)
	}
	return n
}

func publishEvents(t *testing.T, natsURL string, n int) {
	t.Helper()
	publishEventsFrom(t, natsURL, 0, n)
}

// publishEventsFrom publishes runs from..from+n-1 with JetStream acks.
func publishEventsFrom(t *testing.T, natsURL string, from, n int) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(512))
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < from+n; i++ {
		body := fmt.Sprintf(`{"type":"workflowRun.completed","workflowId":"WF","workflowRunId":"run-%d"}`, i)
		// A busy machine can fall behind the 512 outstanding acks: wait for
		// them, bounded, and publish the same message again (same id).
		for try := 0; ; try++ {
			_, err := js.PublishAsync("events.acme.workflowRun.completed", []byte(body), jetstream.WithMsgID(fmt.Sprintf("run-%d", i)))
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) || try == 20 {
				t.Fatal(err)
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(3 * time.Second):
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		t.Fatal("publishes not acknowledged")
	}
}

// TestCrashLosesNothing is DESIGN §3's guarantee against the real binary:
// 2,000 events × 5 subscriptions, kill -9 mid-flight, restart on the same
// data dir, and every (event, subscription) pair arrives; duplicates carry
// the same webhook-id and body.
func TestCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end crash test")
	}
	const events, subs = 2000, 5
	d := newDaemon(t)
	d.start()
	l := newLedger()
	recv := httptest.NewServer(http.HandlerFunc(l.handler))
	defer recv.Close()
	subscribe(t, d, l, recv.URL, subs)
	publishEvents(t, d.natsURL(), events)
	want := events * subs

	// Kill while deliveries flow.
	waitUntil(t, 60*time.Second, "deliveries flowing", func() bool { return l.unique() >= want/5 })
	d.kill9()
	atKill := l.unique()
	restart := time.Now()
	d.start()
	waitUntil(t, 120*time.Second, "every pair delivered", func() bool { return l.unique() >= want })
	recovered := time.Since(restart)
	time.Sleep(time.Second)
	l.check(t)
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("crash test: %d pairs, %d delivered before kill -9, all %d after restart in %s; requests %d, duplicates %d, bad signatures %d",
		want, atKill, want, recovered.Round(time.Millisecond), l.total, l.dups, l.badSig)
}

// TestSIGTERMUnderLoad: SIGTERM mid-flight exits 0 within delivery-timeout
// + 5 s, and a restart delivers everything that was left.
func TestSIGTERMUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end shutdown test")
	}
	const events, subs = 1000, 3
	d := newDaemon(t, "--delivery-timeout", "3s")
	d.start()
	l := newLedger()
	// A slow receiver keeps attempts in flight at the moment of SIGTERM.
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		l.handler(w, r)
	}))
	defer recv.Close()
	subscribe(t, d, l, recv.URL, subs)
	publishEvents(t, d.natsURL(), events)
	waitUntil(t, 60*time.Second, "deliveries flowing", func() bool { return l.unique() >= 300 })
	code, took := d.term(3*time.Second + 5*time.Second)
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	t.Logf("SIGTERM: exited 0 in %s with %d/%d delivered", took.Round(time.Millisecond), l.unique(), events*subs)
	d.start()
	waitUntil(t, 90*time.Second, "the rest delivered after restart", func() bool { return l.unique() >= events*subs })
	l.check(t)
}

func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
