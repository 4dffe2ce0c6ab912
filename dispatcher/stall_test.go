package dispatcher_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/webhookd/webhookd/dispatcher"
	"github.com/webhookd/webhookd/dispatcher/breaker"
	"github.com/webhookd/webhookd/dispatcher/signature"
	"github.com/webhookd/webhookd/events"
)

// turningHost answers 204 at once until turn is called, then accepts
// requests and never answers: a host that was proven healthy and then
// hangs, as a whole provider does in an outage.
type turningHost struct {
	*httptest.Server
	hanging atomic.Bool
	got     atomic.Int64
}

func newTurningHost(t *testing.T) *turningHost {
	th := &turningHost{}
	release := make(chan struct{})
	th.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		th.got.Add(1)
		if !th.hanging.Load() {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); th.Close() })
	return th
}

// TestProvenHostsThatStartHangingDoNotStarveHealthy: hosts that answered
// quickly, and so hold a proven host's standing (MaxConnsPerHost each from
// the healthy pool), stop answering together. Their attempts in flight are
// more than the whole healthy pool, and would hold it until they time out
// (2 s here). The healthy endpoint must not wait for that: its deliveries
// keep arriving promptly while the turned hosts' attempts run out.
func TestProvenHostsThatStartHangingDoNotStarveHealthy(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *dispatcher.Config) {
		// 8 hosts × 8 connections = 64 attempts that can hang at once,
		// against 16 healthy workers.
		c.Workers, c.MaxConnsPerHost, c.SlowWorkers = 16, 8, 128
		c.ProvenLatency = 300 * time.Millisecond
		c.Breaker = breaker.Config{Cooldown: time.Second, MaxCooldown: 2 * time.Second}
	}})
	const turning = 8
	hosts := make([]*turningHost, turning)
	for i := range hosts {
		hosts[i] = newTurningHost(t)
		h.addWebhook("acme", hosts[i].URL, events.WorkflowRunCompleted, "")
	}
	healthy := newReceiver(t, nil)
	hw := h.addWebhook("acme", healthy.URL, events.WorkflowRunCompleted, "")

	// Phase 1: every host answers, and is proven.
	const warm, n = 30, 60
	for i := range warm {
		h.publish("events.acme.workflowRun.completed", completed, "w"+strconv.Itoa(i))
		time.Sleep(10 * time.Millisecond)
	}
	waitFor(t, 20*time.Second, "every host answered the warm-up", func() bool {
		for _, th := range hosts {
			if th.got.Load() < warm {
				return false
			}
		}
		return healthy.count() >= warm
	})

	// Phase 2: they all hang, while events keep coming.
	for _, th := range hosts {
		th.hanging.Store(true)
	}
	published := make(map[string]time.Time, n)
	for i := range n {
		id := "e" + strconv.Itoa(i)
		published[signature.DeliveryID(id, hw.ID)] = time.Now()
		h.publish("events.acme.workflowRun.completed", completed, id)
		time.Sleep(15 * time.Millisecond)
	}
	waitFor(t, 30*time.Second, "healthy receiver gets every event", func() bool { return healthy.count() >= warm+n })
	var late []time.Duration
	for _, r := range healthy.requests() {
		at, ok := published[r.header.Get("Webhook-Id")]
		if !ok {
			continue // a warm-up delivery
		}
		// Starved, a delivery waits for a healthy worker until the turned
		// hosts' attempts time out: up to 2 s. A stalled lane gives its
		// workers up within the proven latency (300 ms).
		if lat := r.at.Sub(at); lat > 1200*time.Millisecond {
			late = append(late, lat)
		}
	}
	if len(late) > 0 {
		t.Errorf("%d of %d healthy deliveries took over 1.2 s after %d proven hosts began to hang: %v", len(late), n, turning, late)
	}
	if moved := value(t, h, "webhookd_deliveries_stalled_total", "action", "moved"); moved == 0 {
		t.Error("no attempt left the healthy pool, want the turned hosts' attempts moved")
	}
}
