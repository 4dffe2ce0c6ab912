package dispatcher_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/webhookd/webhookd/dispatcher/retry"
	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry/ssrf"
)

const completed = `{"type":"workflowRun.completed","workflowId":"WF-1"}`

func TestRetryUntilSuccessKeepsWebhookID(t *testing.T) {
	h := newHarness(t, harnessOpts{policy: retry.Policy{Initial: 100 * time.Millisecond, MaxInterval: time.Second, MaxAge: time.Hour}})
	const failFirst = 3
	r := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n <= failFirst {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	waitFor(t, 30*time.Second, "success on attempt 4", func() bool { return r.count() >= failFirst+1 })
	time.Sleep(300 * time.Millisecond)
	got := r.requests()
	if len(got) != failFirst+1 {
		t.Fatalf("got %d attempts, want %d", len(got), failFirst+1)
	}
	id := got[0].header.Get("webhook-id")
	for i, g := range got {
		if g.header.Get("webhook-id") != id {
			t.Errorf("attempt %d: webhook-id %q, want %q", i+1, g.header.Get("webhook-id"), id)
		}
		if string(g.body) != completed {
			t.Errorf("attempt %d: body changed", i+1)
		}
	}
	if v := testutil.ToFloat64(counter(t, h, "webhookd_delivery_attempts_total", "outcome", "error")); v != failFirst {
		t.Errorf("error attempts metric = %v, want %d", v, failFirst)
	}
}

func TestGiveUpAfterMaxAttemptsRecordsFailure(t *testing.T) {
	h := newHarness(t, harnessOpts{policy: retry.Policy{Initial: 50 * time.Millisecond, MaxInterval: 100 * time.Millisecond, MaxAge: time.Hour, MaxAttempts: 3}})
	r := newReceiver(t, func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) })
	w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	waitFor(t, 30*time.Second, "failure record", func() bool {
		f, err := h.store.Failures(context.Background(), "acme", w.ID, 10)
		return err == nil && len(f) == 1
	})
	f, _ := h.store.Failures(context.Background(), "acme", w.ID, 10)
	if f[0].Attempts != 3 || f[0].Reason != "max_attempts" || f[0].LastStatus != 500 || string(f[0].Body) != completed {
		t.Errorf("failure record = %+v", f[0])
	}
	time.Sleep(1500 * time.Millisecond)
	if n := r.count(); n != 3 {
		t.Errorf("receiver saw %d attempts, want exactly 3", n)
	}
	if v := testutil.ToFloat64(counter(t, h, "webhookd_deliveries_failed_total", "reason", "max_attempts")); v != 1 {
		t.Errorf("failed metric = %v", v)
	}
}

func TestGoneStopsAtOnce(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r := newReceiver(t, func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusGone) })
	w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	waitFor(t, 15*time.Second, "failure record", func() bool {
		f, err := h.store.Failures(context.Background(), "acme", w.ID, 10)
		return err == nil && len(f) == 1
	})
	f, _ := h.store.Failures(context.Background(), "acme", w.ID, 10)
	if f[0].Reason != "gone" || f[0].Attempts != 1 {
		t.Errorf("failure = %+v", f[0])
	}
	time.Sleep(1500 * time.Millisecond)
	if n := r.count(); n != 1 {
		t.Errorf("receiver saw %d attempts after 410, want 1", n)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	h := newHarness(t, harnessOpts{policy: retry.Policy{Initial: 50 * time.Millisecond, MaxInterval: 100 * time.Millisecond,
		MaxAge: time.Hour, MaxRetryAfter: time.Minute}})
	r := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n == 1 {
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	waitFor(t, 30*time.Second, "second attempt", func() bool { return r.count() >= 2 })
	got := r.requests()
	// The policy alone would retry after ~100ms; Retry-After asks for 3s.
	if gap := got[1].at.Sub(got[0].at); gap < 2500*time.Millisecond {
		t.Errorf("retry came %s after a Retry-After: 3", gap)
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	h := newHarness(t, harnessOpts{policy: retry.Policy{Initial: 50 * time.Millisecond, MaxInterval: 100 * time.Millisecond, MaxAge: time.Hour, MaxAttempts: 2}})
	var targetHits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { targetHits.Add(1) }))
	defer target.Close()
	r := newReceiver(t, func(_ int, w http.ResponseWriter) {
		w.Header().Set("Location", target.URL)
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	waitFor(t, 20*time.Second, "failure record", func() bool {
		f, err := h.store.Failures(context.Background(), "acme", w.ID, 10)
		return err == nil && len(f) == 1
	})
	if targetHits.Load() != 0 {
		t.Errorf("redirect target was hit %d times", targetHits.Load())
	}
	if v := testutil.ToFloat64(counter(t, h, "webhookd_delivery_attempts_total", "status_class", "3xx")); v != 2 {
		t.Errorf("3xx attempts = %v, want 2", v)
	}
}

// TestHangingReceiverDoesNotDelayHealthyOne: a receiver that never answers
// holds its own lane only.
func TestHangingReceiverDoesNotDelayHealthyOne(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: nil})
	release := make(chan struct{})
	hanging := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hanging.Close()
	defer close(release)
	healthy := newReceiver(t, nil)
	h.addWebhook("acme", hanging.URL, events.WorkflowRunCompleted, "")
	h.addWebhook("acme", healthy.URL, events.WorkflowRunCompleted, "")
	const n = 200
	start := time.Now()
	for i := 0; i < n; i++ {
		h.publish("events.acme.workflowRun.completed", completed, "e"+strconv.Itoa(i))
	}
	waitFor(t, 30*time.Second, "healthy receiver gets every event", func() bool { return healthy.count() >= n })
	// The hanging receiver's attempts each take the 2s delivery timeout; the
	// healthy one must not have waited for them.
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("healthy deliveries took %s next to a hanging receiver", took)
	}
}

// TestBlockedTargetNeverDialled: with the SSRF guard on, a hostname that
// resolves to loopback is refused at dial time.
func TestBlockedTargetNeverDialled(t *testing.T) {
	h := newHarness(t, harnessOpts{guard: &ssrf.Guard{}, policy: retry.Policy{Initial: 50 * time.Millisecond,
		MaxInterval: 100 * time.Millisecond, MaxAge: time.Hour, MaxAttempts: 2}})
	r := newReceiver(t, nil)
	u := strings.Replace(r.URL, "127.0.0.1", "localhost", 1)
	// Stored directly: registration would refuse "localhost" already; this
	// proves the second line of defence.
	w := h.addWebhook("acme", u, events.WorkflowRunCompleted, "")
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	waitFor(t, 20*time.Second, "failure record", func() bool {
		f, err := h.store.Failures(context.Background(), "acme", w.ID, 10)
		return err == nil && len(f) == 1
	})
	if r.count() != 0 {
		t.Errorf("blocked receiver was dialled %d times", r.count())
	}
	if v := testutil.ToFloat64(counter(t, h, "webhookd_delivery_attempts_total", "status_class", "blocked")); v != 2 {
		t.Errorf("blocked attempts = %v, want 2", v)
	}
}

func TestDeletedSubscriptionStopsReceiving(t *testing.T) {
	h := newHarness(t, harnessOpts{policy: retry.Policy{Initial: 200 * time.Millisecond, MaxInterval: time.Second, MaxAge: time.Hour}})
	r := newReceiver(t, func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) })
	w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	waitFor(t, 10*time.Second, "first attempt", func() bool { return r.count() >= 1 })
	if err := h.store.Delete(context.Background(), "acme", w.ID); err != nil {
		t.Fatal(err)
	}
	seen := r.count()
	waitFor(t, 20*time.Second, "pending retry dropped", func() bool {
		return testutil.ToFloat64(counter(t, h, "webhookd_deliveries_dropped_total", "reason", "webhook_deleted")) >= 1
	})
	if r.count() > seen+1 { // one attempt may have been in flight at delete time
		t.Errorf("deleted subscription kept receiving: %d -> %d", seen, r.count())
	}
}
