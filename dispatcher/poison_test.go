package dispatcher_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookd/webhookd/dispatcher"
	"github.com/webhookd/webhookd/dispatcher/breaker"
	"github.com/webhookd/webhookd/dispatcher/retry"
	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natsconn"
	"github.com/webhookd/webhookd/registry"
)

// failures returns the webhook's failure records.
func failures(t *testing.T, h *harness, id string) []registry.Failure {
	t.Helper()
	f, err := h.store.Failures(context.Background(), "acme", id, 10)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestJobOverMaxPayloadIsRecordedNotLooped: with a small server max
// payload, an event near --max-event-bytes is stored, but its delivery job
// (the event plus headers) or its retry (plus a last error and a
// schedule) is not: the delivery ends as a recorded failure with reason
// too_large, and nothing is handed out again.
func TestJobOverMaxPayloadIsRecordedNotLooped(t *testing.T) {
	const maxPayload = 64 << 10
	for _, tc := range []struct {
		name     string
		status   int // the receiver's answer
		margin   func(first, retry int) int
		attempts int // attempts made, recorded and seen by the receiver
	}{
		// The first job is 10 bytes over the limit: stored never.
		{name: "the first job", status: 200, margin: func(first, _ int) int { return maxPayload - first + 10 }, attempts: 0},
		// The first job fits with 20 bytes to spare, its retry does not.
		{name: "its retry", status: 500, margin: func(first, _ int) int { return maxPayload - first - 20 }, attempts: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			emb := embedded(t, natsconn.EmbeddedConfig{MaxPayload: maxPayload})
			h := harnessOn(t, emb.ClientURL(), harnessOpts{cfg: func(c *dispatcher.Config) { c.MaxEventBytes = maxPayload }})
			r := newReceiver(t, func(_ int, w http.ResponseWriter) { w.WriteHeader(tc.status) })
			w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
			const subject, eventID = "events.acme.workflowRun.completed", "big-1"
			first, retry := h.disp.JobPayloadSizes(eventID, w.ID, "acme", events.WorkflowRunCompleted, subject, 0, "HTTP 500")
			bodyLen := tc.margin(first, retry)
			if tc.attempts == 0 && first+bodyLen <= maxPayload || tc.attempts == 1 && (first+bodyLen > maxPayload || retry+bodyLen <= maxPayload) {
				t.Fatalf("sizes: job %d, retry %d, limit %d", first+bodyLen, retry+bodyLen, maxPayload)
			}
			h.publish(subject, eventBody(bodyLen), eventID) // the event itself fits
			waitFor(t, 20*time.Second, "failure record", func() bool { return len(failures(t, h, w.ID)) == 1 })
			f := failures(t, h, w.ID)[0]
			if f.Reason != "too_large" || f.Attempts != tc.attempts || len(f.Body) != bodyLen {
				t.Errorf("failure = reason %q, %d attempts, %d-byte body; want too_large, %d, %d", f.Reason, f.Attempts, len(f.Body), tc.attempts, bodyLen)
			}
			t.Logf("recorded: %s", f.LastError)
			waitFor(t, 10*time.Second, "nothing left to hand out", func() bool {
				fan := consumerInfo(t, h.js, events.DefaultStreamName, "webhookd-fanout")
				return fan.NumPending == 0 && fan.NumAckPending == 0 && streamState(t, h.js, "WEBHOOKD_DELIVERIES").Msgs == 0
			})
			time.Sleep(1500 * time.Millisecond)
			if n := r.count(); n != tc.attempts {
				t.Errorf("receiver saw %d attempts, want %d", n, tc.attempts)
			}
			if v := value(t, h, "webhookd_deliveries_failed_total", "reason", "too_large"); v != 1 {
				t.Errorf("deliveries_failed_total{reason=too_large} = %v", v)
			}
		})
	}
}

// TestMaxDeliveriesEndsAPoisonLoop: a job whose next state cannot be
// stored (the store is full, so its retry is refused) is handed back and
// attempted again; after MaxDeliveries it is recorded as failed with
// reason max_deliveries and terminated, instead of looping forever.
func TestMaxDeliveriesEndsAPoisonLoop(t *testing.T) {
	const store = 4 << 20
	emb := embedded(t, natsconn.EmbeddedConfig{MaxStore: store})
	h := harnessOn(t, emb.ClientURL(), harnessOpts{
		policy: retry.Policy{Initial: 100 * time.Millisecond, MaxInterval: time.Second, MaxAge: time.Hour},
		cfg:    func(c *dispatcher.Config) { c.MaxDeliveries = 3 },
	})
	filled := make(chan struct{})
	r := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n == 1 {
			<-filled // the store fills while the first attempt is in flight
		}
		w.WriteHeader(http.StatusInternalServerError)
	})
	w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	waitFor(t, 10*time.Second, "first attempt in flight", func() bool { return r.count() == 1 })
	free := fillStore(t, h.js)
	defer free()
	close(filled)
	waitFor(t, 30*time.Second, "failure record", func() bool { return len(failures(t, h, w.ID)) == 1 })
	// The retries were never stored, so the job handed out each time was
	// its first copy: the record counts the attempts it knows were made
	// (none stored) and says what happened.
	f := failures(t, h, w.ID)[0]
	if f.Reason != "max_deliveries" || f.Attempts != 0 || !strings.Contains(f.LastError, "handed out 3 times") {
		t.Errorf("failure = reason %q, %d attempts, last error %q; want max_deliveries, 0, \"handed out 3 times...\"",
			f.Reason, f.Attempts, f.LastError)
	}
	time.Sleep(1500 * time.Millisecond)
	if n := r.count(); n != 3 {
		t.Errorf("receiver saw %d attempts, want 3 (one per delivery)", n)
	}
	if v := value(t, h, "webhookd_deliveries_failed_total", "reason", "max_deliveries"); v != 1 {
		t.Errorf("deliveries_failed_total{reason=max_deliveries} = %v", v)
	}
	if s := streamState(t, h.js, "WEBHOOKD_DELIVERIES"); s.Msgs != 0 {
		t.Errorf("deliveries stream still holds %d messages", s.Msgs)
	}
}

// TestParkingDoesNotCountAgainstMaxDeliveries: a job parked again and
// again while its circuit stays open, and retried as often, is stored as
// a new message each time, so even a bound of 2 never ends it.
func TestParkingDoesNotCountAgainstMaxDeliveries(t *testing.T) {
	h := newHarness(t, harnessOpts{
		policy: retry.Policy{Initial: 50 * time.Millisecond, MaxInterval: 100 * time.Millisecond, MaxAge: time.Hour},
		cfg: func(c *dispatcher.Config) {
			c.MaxDeliveries = 2
			// Cool-downs longer than the scheduler's 1 s tick: every retry
			// arrives while the circuit is open and is parked.
			c.Breaker = breaker.Config{FailureThreshold: 1, Cooldown: 2 * time.Second, MaxCooldown: 2 * time.Second}
		}})
	const failing = 3
	r := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n <= failing {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	waitFor(t, 40*time.Second, "delivered after its failures", func() bool { return r.count() == failing+1 })
	if parked := value(t, h, "webhookd_deliveries_parked_total", "stage", "delivery"); parked < failing-1 {
		t.Errorf("parked %v times, want at least %d", parked, failing-1)
	}
	if f := failures(t, h, w.ID); len(f) != 0 {
		t.Errorf("failure recorded: %+v", f[0])
	}
}

// hiding hides webhooks from the local index, as an instance sees a
// webhook registered through another before the registration reaches it.
type hiding struct {
	dispatcher.Subscriptions
	mu     sync.Mutex
	hidden map[string]bool
}

func (s *hiding) Get(id string) (*registry.Webhook, bool) {
	s.mu.Lock()
	hidden := s.hidden[id]
	s.mu.Unlock()
	if hidden {
		return nil, false
	}
	return s.Subscriptions.Get(id)
}

func (s *hiding) set(id string, hide bool) {
	s.mu.Lock()
	s.hidden[id] = hide
	s.mu.Unlock()
}

// lookupFunc adapts a function to dispatcher.Lookup.
type lookupFunc func(ctx context.Context, id string) (*registry.Webhook, bool, error)

func (f lookupFunc) Lookup(ctx context.Context, id string) (*registry.Webhook, bool, error) {
	return f(ctx, id)
}

// TestOutageHandBacksDoNotExhaustMaxDeliveries: a job whose webhook cannot
// be looked up (the shared registry is unreachable) is handed back; past
// half of MaxDeliveries it waits as a fresh message instead, so however
// long the outage, it is delivered once the registry answers.
func TestOutageHandBacksDoNotExhaustMaxDeliveries(t *testing.T) {
	var subs *hiding
	var reachable atomic.Bool
	h := newHarness(t, harnessOpts{cfg: func(c *dispatcher.Config) {
		c.MaxDeliveries = 2
		subs = &hiding{Subscriptions: c.Subscriptions, hidden: map[string]bool{}}
		c.Subscriptions = subs
		c.Lookup = lookupFunc(func(_ context.Context, id string) (*registry.Webhook, bool, error) {
			if !reachable.Load() {
				return nil, false, errors.New("registry unreachable")
			}
			subs.set(id, false) // the registration arrives
			return nil, true, nil
		})
	}})
	r := newReceiver(t, nil)
	w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	subs.set(w.ID, true)
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	// Long enough for more deliveries than the bound without the fresh copies.
	waitFor(t, 30*time.Second, "the job set aside as a fresh copy twice", func() bool {
		return value(t, h, "webhookd_deliveries_deferred_total", "", "") >= 2
	})
	if r.count() != 0 {
		t.Fatal("delivered to a webhook that could not be looked up")
	}
	reachable.Store(true)
	waitFor(t, 20*time.Second, "delivered once the registry answers", func() bool { return r.count() == 1 })
	if f := failures(t, h, w.ID); len(f) != 0 {
		t.Errorf("failure recorded: %+v", f[0])
	}
}
