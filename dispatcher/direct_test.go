package dispatcher_test

import (
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookd/webhookd/dispatcher"
	"github.com/webhookd/webhookd/events"
)

const (
	deliveriesStream = "WEBHOOKD_DELIVERIES"
	completedSubject = "events.acme.workflowRun.completed"
)

// warm delivers one event to every receiver's webhook and waits until
// each webhook is healthy and each host proven, so that later deliveries
// may go direct.
func warm(t *testing.T, h *harness, rs ...*receiver) {
	t.Helper()
	h.publish(completedSubject, completed, "warm")
	for _, r := range rs {
		u, err := url.Parse(r.URL)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "warm-up delivery", func() bool { return r.count() >= 1 && h.disp.Proven(u.Host) })
	}
	settled(t, h)
}

// settled waits until no event awaits its ack and no job is stored.
func settled(t *testing.T, h *harness) {
	t.Helper()
	waitFor(t, 20*time.Second, "events acked and no job left", func() bool {
		ci := consumerInfo(t, h.js, events.DefaultStreamName, "webhookd-fanout")
		return ci.NumAckPending == 0 && ci.NumPending == 0 && streamState(t, h.js, deliveriesStream).Msgs == 0
	})
}

// ids returns the webhook-id of every request r got.
func ids(r *receiver) []string {
	var out []string
	for _, q := range r.requests() {
		out = append(out, q.header.Get("Webhook-Id"))
	}
	return out
}

func distinct(s []string) int {
	seen := map[string]bool{}
	for _, v := range s {
		seen[v] = true
	}
	return len(seen)
}

// TestDirectDeliveryStoresNoJob: once a webhook is healthy on a proven
// host, its deliveries go straight from the event: no job is stored, and
// each arrives once.
func TestDirectDeliveryStoresNoJob(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r := newReceiver(t, nil)
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	warm(t, h, r)
	before := streamState(t, h.js, deliveriesStream).LastSeq
	const n = 100
	for i := range n {
		h.publish(completedSubject, completed, "e"+strconv.Itoa(i))
	}
	waitFor(t, 20*time.Second, "every event delivered", func() bool { return r.count() >= n+1 })
	settled(t, h)
	if stored := streamState(t, h.js, deliveriesStream).LastSeq - before; stored != 0 {
		t.Errorf("%d messages stored in the deliveries stream for %d direct deliveries, want 0", stored, n)
	}
	if got := value(t, h, "webhookd_deliveries_direct_total", "", ""); got != n {
		t.Errorf("deliveries_direct_total = %v, want %d", got, n)
	}
	if got := ids(r); len(got) != n+1 || distinct(got) != n+1 {
		t.Errorf("receiver got %d requests with %d distinct webhook-ids, want %d of each", len(got), distinct(got), n+1)
	}
}

// TestDirectDeliveryPastItsDeadline: the event of a direct delivery whose
// attempt outlasts DirectDeadline is acked while the attempt runs (a
// stored continuation covers it), and the continuation is deleted once
// the attempt succeeds, so nothing is delivered twice.
func TestDirectDeliveryPastItsDeadline(t *testing.T) {
	var h *harness
	var ackedWhileRunning atomic.Bool
	r := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n == 2 {
			deadline := time.Now().Add(1500 * time.Millisecond)
			for time.Now().Before(deadline) {
				ci := consumerInfo(t, h.js, events.DefaultStreamName, "webhookd-fanout")
				if ci.NumAckPending == 0 && ci.NumPending == 0 && streamState(t, h.js, deliveriesStream).Msgs == 1 {
					ackedWhileRunning.Store(true)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	h = newHarness(t, harnessOpts{cfg: func(c *dispatcher.Config) { c.DirectDeadline = 100 * time.Millisecond }})
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	warm(t, h, r)
	h.publish(completedSubject, completed, "slow")
	waitFor(t, 10*time.Second, "the slow delivery", func() bool { return r.count() >= 2 })
	settled(t, h)
	if !ackedWhileRunning.Load() {
		t.Error("the event was not acked, with one continuation stored, while its attempt ran past the deadline")
	}
	if got := value(t, h, "webhookd_deliveries_direct_stored_total", "reason", "attempting"); got != 1 {
		t.Errorf("continuations stored = %v, want 1", got)
	}
	if got := ids(r); len(got) != 2 || distinct(got) != 2 {
		t.Errorf("receiver got %d requests with %d distinct webhook-ids, want 2 of each", len(got), distinct(got))
	}
}

// TestDirectDeliveryQueuedPastItsDeadline: direct deliveries still waiting
// in their lane at the deadline are stored as jobs in their place; each is
// delivered once, by its job.
func TestDirectDeliveryQueuedPastItsDeadline(t *testing.T) {
	release := make(chan struct{})
	r := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n == 2 {
			<-release
		}
		w.WriteHeader(http.StatusNoContent)
	})
	free := sync.OnceFunc(func() { close(release) })
	t.Cleanup(free) // before the receiver closes, should the test fail early
	h := newHarness(t, harnessOpts{cfg: func(c *dispatcher.Config) {
		c.DirectDeadline = 100 * time.Millisecond
		c.MaxConnsPerHost = 1
		c.DirectPerHost = 8
	}})
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	warm(t, h, r)
	for i := range 3 {
		h.publish(completedSubject, completed, "q"+strconv.Itoa(i))
	}
	// The first holds the host's one connection; the other two wait in the
	// lane until their deadline stores them.
	waitFor(t, 10*time.Second, "two deliveries stored at their deadline", func() bool {
		return value(t, h, "webhookd_deliveries_direct_stored_total", "reason", "queued") == 2
	})
	free()
	waitFor(t, 10*time.Second, "every event delivered", func() bool { return r.count() >= 4 })
	settled(t, h)
	if got := ids(r); len(got) != 4 || distinct(got) != 4 {
		t.Errorf("receiver got %d requests with %d distinct webhook-ids, want 4 of each", len(got), distinct(got))
	}
}

// TestFailingDirectDeliveryRetriesAlone: when one of an event's direct
// deliveries fails, its retry is stored and the event acked; the healthy
// receiver of the same event is not POSTed again.
func TestFailingDirectDeliveryRetriesAlone(t *testing.T) {
	healthy := newReceiver(t, nil)
	flaky := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n == 2 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	h := newHarness(t, harnessOpts{})
	h.addWebhook("acme", healthy.URL, events.WorkflowRunCompleted, "")
	h.addWebhook("acme", flaky.URL, events.WorkflowRunCompleted, "")
	warm(t, h, healthy, flaky)
	h.publish(completedSubject, completed, "two")
	waitFor(t, 10*time.Second, "the retry", func() bool { return flaky.count() >= 3 })
	settled(t, h)
	if got := value(t, h, "webhookd_deliveries_direct_total", "", ""); got != 2 {
		t.Errorf("deliveries_direct_total = %v, want 2 (the event's two deliveries)", got)
	}
	if n := healthy.count(); n != 2 {
		t.Errorf("healthy receiver got %d requests, want 2 (warm-up and the event, once)", n)
	}
	if got := ids(flaky); len(got) != 3 || got[1] != got[2] {
		t.Errorf("flaky receiver's webhook-ids %v: want 3 requests, the retry with the failed attempt's id", got)
	}
}

// TestDirectDeliveryFailingPastItsDeadline: an attempt that runs past the
// deadline and then fails stores its retry; the continuation is dropped,
// so the retry is the one further request.
func TestDirectDeliveryFailingPastItsDeadline(t *testing.T) {
	r := newReceiver(t, func(n int, w http.ResponseWriter) {
		if n == 2 {
			time.Sleep(300 * time.Millisecond)
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	h := newHarness(t, harnessOpts{cfg: func(c *dispatcher.Config) { c.DirectDeadline = 100 * time.Millisecond }})
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	warm(t, h, r)
	h.publish(completedSubject, completed, "fails-late")
	waitFor(t, 10*time.Second, "the retry", func() bool { return r.count() >= 3 })
	settled(t, h)
	if got := value(t, h, "webhookd_deliveries_direct_stored_total", "reason", "attempting"); got != 1 {
		t.Errorf("continuations stored = %v, want 1", got)
	}
	if got := ids(r); len(got) != 3 || got[1] != got[2] {
		t.Errorf("webhook-ids %v: want warm-up, the failed attempt and its retry under the same id", got)
	}
}
