package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/webhookd/webhookd/dispatcher"
	"github.com/webhookd/webhookd/events"
)

// switchSync is a RegistrySync the test opens and closes: while closed,
// Sync waits (polling) until its ctx ends, as a registry that is behind.
type switchSync struct {
	open  atomic.Bool
	calls atomic.Int64
}

func (s *switchSync) Sync(ctx context.Context) error {
	s.calls.Add(1)
	for !s.open.Load() {
		select {
		case <-ctx.Done():
			return errors.New("registry behind")
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// TestFanoutWaitsForTheRegistry: fan-out takes no event before the
// registry has synced once (the join gate), every later batch is matched
// only after a Sync, and a batch whose Sync times out is handed back and
// fanned out once the registry is current, delivered exactly once.
func TestFanoutWaitsForTheRegistry(t *testing.T) {
	gate := &switchSync{}
	h := newHarness(t, harnessOpts{cfg: func(c *dispatcher.Config) {
		c.Registry = gate
		c.RegistrySyncTimeout = 50 * time.Millisecond
		c.RegistrySyncRetry = 50 * time.Millisecond
	}})
	r := newReceiver(t, nil)
	h.addWebhook("acme", r.URL+"/hook", events.WorkflowRunCompleted, "")
	body := `{"type":"workflowRun.completed","workflowId":"WF-1"}`
	h.publish("events.acme.workflowRun.completed", body, "evt-join")

	// Closed gate: the event stays in the stream, unmatched and unacked.
	time.Sleep(500 * time.Millisecond)
	if n := r.count(); n != 0 {
		t.Fatalf("fan-out delivered %d events before the registry synced", n)
	}
	gate.open.Store(true)
	waitFor(t, 10*time.Second, "the event once the registry synced", func() bool { return r.count() == 1 })

	// Open gate, then closed again: the batch times out, is handed back,
	// and goes out once the gate opens.
	gate.open.Store(false)
	before := gate.calls.Load()
	h.publish("events.acme.workflowRun.completed", body, "evt-behind")
	waitFor(t, 10*time.Second, "a failed sync", func() bool {
		return testutil.ToFloat64(counter(t, h, "webhookd_fanout_registry_sync_failures_total", "", "")) >= 1
	})
	if r.count() != 1 {
		t.Fatal("a batch was matched although its Sync failed")
	}
	gate.open.Store(true)
	waitFor(t, 10*time.Second, "the handed-back event", func() bool { return r.count() == 2 })
	for i := range 5 {
		h.publish("events.acme.workflowRun.completed", body, fmt.Sprintf("evt-%d", i))
	}
	waitFor(t, 10*time.Second, "five more", func() bool { return r.count() == 7 })
	if gate.calls.Load() <= before {
		t.Error("batches were matched without a Sync")
	}
	time.Sleep(200 * time.Millisecond)
	if n := r.count(); n != 7 {
		t.Errorf("receiver got %d requests, want 7 (no duplicates from handed-back batches)", n)
	}
}

// TestRegistryBehindStopsPulling: once a batch is handed back because the
// registry cannot be confirmed current (an entry this instance cannot
// open, say), the instance pulls no more events until it can, instead of
// taking its share of them again and again: other instances fan them out.
func TestRegistryBehindStopsPulling(t *testing.T) {
	gate := &switchSync{}
	gate.open.Store(true)
	h := newHarness(t, harnessOpts{cfg: func(c *dispatcher.Config) {
		c.Registry = gate
		c.RegistrySyncTimeout = 20 * time.Millisecond
		c.RegistrySyncRetry = 300 * time.Millisecond
	}})
	r := newReceiver(t, nil)
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	gate.open.Store(false)
	h.publish("events.acme.workflowRun.completed", completed, "evt-behind")
	failures := func() float64 {
		return testutil.ToFloat64(counter(t, h, "webhookd_fanout_registry_sync_failures_total", "", ""))
	}
	waitFor(t, 10*time.Second, "a failed sync", func() bool { return failures() >= 1 })
	// Handed back for 300 ms at a time and pulled again, the event would
	// fail its sync about five times in these 1.5 s.
	time.Sleep(1500 * time.Millisecond)
	if n := failures(); n > 1 {
		t.Errorf("%v batches handed back while the registry stayed behind; want the instance to stop pulling after the first", n)
	}
	gate.open.Store(true)
	waitFor(t, 10*time.Second, "the event once the registry is current", func() bool { return r.count() == 1 })
}
