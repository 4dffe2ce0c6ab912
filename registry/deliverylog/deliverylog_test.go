package deliverylog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
)

func newLog(t *testing.T, cfg Config) *Log {
	t.Helper()
	_, cfg.JetStream = natstest.Client(t, natstest.JetStream(t))
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for l.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatal("stream not set up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return l
}

func flush(t *testing.T, l *Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func attempt(wh, delivery string, n int, state State, at time.Time) Attempt {
	return Attempt{DeliveryID: delivery, WebhookID: wh, Workspace: "ws", EventID: "ev-" + delivery,
		EventType: "workflowRun.completed", Attempt: n, At: at, State: state}
}

func TestDeliveriesFoldAttemptsNewestFirst(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := newLog(t, Config{Registerer: reg})
	t0 := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	// d1: failed twice, then succeeded; d2: retrying; d3: failed; d4 on
	// another webhook.
	for _, a := range []Attempt{
		attempt("wh_a", "d1", 1, Retrying, t0),
		attempt("wh_a", "d2", 1, Retrying, t0.Add(time.Second)),
		attempt("wh_a", "d1", 2, Retrying, t0.Add(2*time.Second)),
		attempt("wh_a", "d3", 1, Failed, t0.Add(3*time.Second)),
		attempt("wh_a", "d1", 3, Succeeded, t0.Add(4*time.Second)),
		attempt("wh_b", "d4", 1, Succeeded, t0.Add(5*time.Second)),
	} {
		l.Record(a)
	}
	flush(t, l)
	if got := testutil.ToFloat64(l.metrics.records); got != 6 {
		t.Errorf("records_total = %v, want 6", got)
	}
	ctx := context.Background()
	p, err := l.Deliveries(ctx, "ws", "wh_a", Query{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range p.Deliveries {
		got = append(got, fmt.Sprintf("%s:%s:%d", d.ID, d.State, len(d.Attempts)))
	}
	if want := "d3:failed:1 d2:retrying:1 d1:succeeded:3"; strings.Join(got, " ") != want {
		t.Errorf("deliveries = %v, want %s", got, want)
	}
	for _, tc := range []struct {
		name string
		q    Query
		want string
	}{
		{"state", Query{State: Retrying}, "d2"},
		{"since", Query{Since: t0.Add(2500 * time.Millisecond)}, "d3 d1"},
		{"first page", Query{Limit: 2}, "d3 d2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := l.Deliveries(ctx, "ws", "wh_a", tc.q)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, d := range p.Deliveries {
				ids = append(ids, d.ID)
			}
			if strings.Join(ids, " ") != tc.want {
				t.Errorf("got %v, want %s", ids, tc.want)
			}
		})
	}
	first, _ := l.Deliveries(ctx, "ws", "wh_a", Query{Limit: 2})
	if first.NextCursor == "" {
		t.Fatal("no cursor after a full page")
	}
	next, err := l.Deliveries(ctx, "ws", "wh_a", Query{Limit: 2, Cursor: first.NextCursor})
	if err != nil || len(next.Deliveries) != 1 || next.Deliveries[0].ID != "d1" || next.NextCursor != "" {
		t.Errorf("second page = %+v, %v; want d1 alone, no cursor", next, err)
	}
	if _, err := l.Deliveries(ctx, "ws", "wh_a", Query{Cursor: "!!"}); !errors.Is(err, ErrBadCursor) {
		t.Errorf("bad cursor: %v", err)
	}
	d, err := l.Delivery(ctx, "ws", "wh_a", "d1")
	if err != nil || d.Attempts[2].Attempt != 3 || !d.FirstAttemptAt.Equal(t0) || d.State != Succeeded {
		t.Errorf("Delivery(d1) = %+v, %v", d, err)
	}
	if _, err := l.Delivery(ctx, "ws", "wh_a", "d4"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("another webhook's delivery: %v, want not found", err)
	}
	if _, err := l.Delivery(ctx, "other", "wh_a", "d1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("another workspace's webhook: %v, want not found", err)
	}
	ev, err := l.EventDeliveries(ctx, "ws", "ev-d4", time.Time{})
	if err != nil || len(ev) != 1 || ev[0].WebhookID != "wh_b" {
		t.Errorf("EventDeliveries(ev-d4) = %+v, %v", ev, err)
	}
	failed, err := l.FailedEventIDs(ctx, "ws", "wh_a")
	if err != nil || len(failed) != 1 || !failed["ev-d3"] {
		t.Errorf("FailedEventIDs = %v, %v", failed, err)
	}
}

func TestLogIsBoundedPerWebhook(t *testing.T) {
	l := newLog(t, Config{MaxPerWebhook: 5})
	now := time.Now()
	for i := range 20 {
		l.Record(attempt("wh_busy", fmt.Sprintf("d%02d", i), 1, Succeeded, now))
	}
	l.Record(attempt("wh_quiet", "q", 1, Succeeded, now))
	flush(t, l)
	p, err := l.Deliveries(context.Background(), "ws", "wh_busy", Query{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Deliveries) != 5 || p.Deliveries[0].ID != "d19" || p.Deliveries[4].ID != "d15" {
		t.Errorf("busy webhook keeps %d deliveries (%+v), want the newest 5", len(p.Deliveries), p.Deliveries)
	}
	q, _ := l.Deliveries(context.Background(), "ws", "wh_quiet", Query{})
	if len(q.Deliveries) != 1 {
		t.Errorf("a busy webhook pushed out another's delivery: %+v", q.Deliveries)
	}
}

func TestRecordRefusesWhatItCannotStore(t *testing.T) {
	l := newLog(t, Config{})
	l.Record(attempt("wh.*", "d", 1, Succeeded, time.Now())) // not a token
	long := attempt("wh_a", "d", 1, Failed, time.Now())
	long.Error = strings.Repeat("e", 10_000)
	long.Response = strings.Repeat("r", 10_000)
	l.Record(long)
	flush(t, l)
	if got := testutil.ToFloat64(l.metrics.dropped); got != 1 {
		t.Errorf("dropped = %v, want 1 (the bad id)", got)
	}
	d, err := l.Delivery(context.Background(), "ws", "wh_a", "d")
	if err != nil {
		t.Fatal(err)
	}
	if a := d.Attempts[0]; len(a.Error) != maxErrorBytes || len(a.Response) != MaxResponseBytes {
		t.Errorf("kept %d error and %d response bytes", len(a.Error), len(a.Response))
	}
}

func TestSnippet(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"text", `{"ok":true}`, `{"ok":true}`},
		{"binary", "\x89PNG\x00\x01", ""},
		{"invalid utf-8", "a\xffb", ""},
		{"cut at 1 KiB", strings.Repeat("x", 2000), strings.Repeat("x", MaxResponseBytes)},
		{"cut inside a rune", strings.Repeat("x", MaxResponseBytes-1) + "é", strings.Repeat("x", MaxResponseBytes-1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Snippet([]byte(tc.in)); got != tc.want {
				t.Errorf("Snippet = %q, want %q", got, tc.want)
			}
		})
	}
}

func FuzzSnippet(f *testing.F) {
	f.Add([]byte("hello"))
	f.Add([]byte(strings.Repeat("é", 700)))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := Snippet(b)
		if len(s) > MaxResponseBytes || (s != "" && !strings.HasPrefix(string(b), s)) {
			t.Fatalf("Snippet(%q) = %q", b, s)
		}
	})
}

func TestNewValidates(t *testing.T) {
	_, js := natstest.Client(t, natstest.JetStream(t))
	for _, cfg := range []Config{
		{},
		{JetStream: js, Stream: "a.b"},
		{JetStream: js, SubjectPrefix: "a.*"},
		{JetStream: js, MaxPerWebhook: MaxPerWebhookLimit + 1},
		{JetStream: js, MaxAge: -time.Second},
		{JetStream: js, Replicas: 7},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
