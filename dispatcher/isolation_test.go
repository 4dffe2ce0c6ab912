package dispatcher_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/webhookd/webhookd/dispatcher"
	"github.com/webhookd/webhookd/dispatcher/breaker"
	"github.com/webhookd/webhookd/dispatcher/retry"
	"github.com/webhookd/webhookd/dispatcher/signature"
	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry/health"
)

func value(t *testing.T, h *harness, name, label, v string) float64 {
	t.Helper()
	return testutil.ToFloat64(counter(t, h, name, label, v))
}

// hangingHost accepts requests and never answers; it counts the
// connections open to it at any moment and their peak.
type hangingHost struct {
	*httptest.Server
	open, peak atomic.Int64
}

func newHangingHost(t *testing.T) *hangingHost {
	hh := &hangingHost{}
	release := make(chan struct{})
	hh.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Reading the body lets the server notice at once when the client
		// gives up and closes the connection (its background read starts
		// only then), so the open count is the client's.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	hh.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			n := hh.open.Add(1)
			for p := hh.peak.Load(); n > p && !hh.peak.CompareAndSwap(p, n); p = hh.peak.Load() {
			}
		case http.StateClosed, http.StateHijacked:
			hh.open.Add(-1)
		}
	}
	hh.Start()
	t.Cleanup(func() { close(release); hh.Close() })
	return hh
}

// TestManyHangingHostsDoNotStarveHealthy: with a worker pool far smaller
// than the number of hanging hosts, a healthy endpoint still gets every
// event promptly, each hanging host holds at most the probation
// connections, and their circuits open and park their jobs.
func TestManyHangingHostsDoNotStarveHealthy(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *dispatcher.Config) {
		// Fewer workers than hanging hosts, in every pool but the fresh
		// one, which takes each new host's first two attempts.
		c.Workers, c.ProbationWorkers, c.FreshWorkers, c.ProbationConnsPerHost = 16, 16, 64, 2
		c.MaxAckPending = 2000
		c.Breaker = breaker.Config{Cooldown: time.Second, MaxCooldown: 2 * time.Second}
	}})
	const dead, n = 30, 60
	hosts := make([]*hangingHost, dead)
	for i := range hosts {
		hosts[i] = newHangingHost(t)
		h.addWebhook("acme", hosts[i].URL, events.WorkflowRunCompleted, "")
	}
	healthy := newReceiver(t, nil)
	hw := h.addWebhook("acme", healthy.URL, events.WorkflowRunCompleted, "")
	published := make(map[string]time.Time, n)
	for i := range n {
		id := "e" + strconv.Itoa(i)
		published[signature.DeliveryID(id, hw.ID)] = time.Now()
		h.publish("events.acme.workflowRun.completed", completed, id)
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, 30*time.Second, "healthy receiver gets every event", func() bool { return healthy.count() >= n })
	waitFor(t, 30*time.Second, "every hanging host's circuit open", func() bool {
		return value(t, h, "webhookd_circuits_open", "", "") >= dead
	})
	waitFor(t, 20*time.Second, "jobs parked", func() bool {
		return value(t, h, "webhookd_deliveries_parked_total", "stage", "fanout")+
			value(t, h, "webhookd_deliveries_parked_total", "stage", "delivery") > 0
	})
	// The server sees a timed-out connection close a moment after the
	// client dropped it, when the next attempt may already have begun:
	// hence one more than the probation limit of 2.
	for i, hh := range hosts {
		if p := hh.peak.Load(); p > 3 {
			t.Errorf("hanging host %d had %d connections open at once, want at most 3", i, p)
		}
	}
	// With every circuit open, only probes reach the hanging hosts: at
	// most one connection each, not the probation limit.
	time.Sleep(3 * time.Second)
	var open int64
	for _, hh := range hosts {
		open += hh.open.Load()
	}
	if open > dead {
		t.Errorf("%d connections open to %d hanging hosts with their circuits open; want at most one probe each", open, dead)
	}
	// Starved, the healthy endpoint would queue behind rounds of 2 s
	// hanging attempts (60 of them for 16 workers: about 8 s). Isolated, it
	// waits for none of them.
	for _, r := range healthy.requests() {
		at, ok := published[r.header.Get("Webhook-Id")]
		if !ok {
			t.Fatalf("unexpected webhook-id %q", r.header.Get("Webhook-Id"))
		}
		if lat := r.at.Sub(at); lat > 4*time.Second {
			t.Errorf("healthy delivery took %s next to %d hanging hosts", lat, dead)
		}
	}
}

// TestRecoveredHostGetsEverythingItMissed: a receiver that fails until it
// is fixed opens its circuit; the jobs wait parked, not retried in a loop,
// and once it answers again every event arrives, each with its stable
// webhook-id.
func TestRecoveredHostGetsEverythingItMissed(t *testing.T) {
	h := newHarness(t, harnessOpts{
		policy: retry.Policy{Initial: 100 * time.Millisecond, MaxInterval: 200 * time.Millisecond, MaxAge: time.Hour},
		cfg: func(c *dispatcher.Config) {
			c.Breaker = breaker.Config{FailureThreshold: 3, Cooldown: 500 * time.Millisecond, MaxCooldown: time.Second}
		}})
	var fixed atomic.Bool
	r := newReceiver(t, func(_ int, w http.ResponseWriter) {
		if !fixed.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	const n = 40
	for i := range n {
		h.publish("events.acme.workflowRun.completed", completed, "e"+strconv.Itoa(i))
	}
	waitFor(t, 10*time.Second, "circuit open", func() bool {
		return value(t, h, "webhookd_breaker_transitions_total", "to", "open") >= 1
	})
	// While open, attempts are only probes: over two seconds, with a
	// cool-down of at most one second, a handful at most. Events published
	// meanwhile are parked by the fan-out itself.
	before := r.count()
	for i := n; i < 2*n; i++ {
		h.publish("events.acme.workflowRun.completed", completed, "e"+strconv.Itoa(i))
	}
	time.Sleep(2 * time.Second)
	if during := r.count() - before; during > 6 {
		t.Errorf("%d attempts in 2 s while the circuit was open; want only probes", during)
	}
	if v := value(t, h, "webhookd_deliveries_parked_total", "stage", "fanout"); v < 1 {
		t.Errorf("parked at fan-out = %v, want the events published while open", v)
	}
	fixedAt := time.Now()
	fixed.Store(true)
	waitFor(t, 20*time.Second, "every event delivered after recovery", func() bool {
		ids := map[string]bool{}
		for _, q := range r.requests() {
			if q.at.After(fixedAt) {
				ids[q.header.Get("Webhook-Id")] = true
			}
		}
		return len(ids) == 2*n
	})
	// Parked and re-parked jobs keep the event's bytes exactly.
	for _, q := range r.requests() {
		if string(q.body) != completed {
			t.Fatalf("delivered body %q, want the event as published", q.body)
		}
	}
	if v := value(t, h, "webhookd_breaker_transitions_total", "to", "closed"); v < 1 {
		t.Errorf("closed transitions = %v, want at least 1", v)
	}
	if v := value(t, h, "webhookd_deliveries_parked_total", "", ""); v < 1 {
		t.Errorf("parked = %v, want jobs parked while the circuit was open", v)
	}
}

// TestGoneDisablesAndEnableResumes: a 410 disables the webhook, announces
// it on NATS, stops new jobs; enabling it resumes deliveries.
func TestGoneDisablesAndEnableResumes(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: func(c *dispatcher.Config) {
		c.DisableOnGone = true
	}, disabler: true})
	var gone atomic.Bool
	gone.Store(true)
	r := newReceiver(t, func(_ int, w http.ResponseWriter) {
		if gone.Load() {
			w.WriteHeader(http.StatusGone)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	ops := make(chan *nats.Msg, 4)
	sub, err := h.nc.ChanSubscribe("events.acme.webhook.disabled", ops)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	var ev struct {
		Type, WebhookID, Workspace, Reason string
		LastStatus                         int
	}
	select {
	case m := <-ops:
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook.disabled event")
	}
	if ev.Type != "webhook.disabled" || ev.WebhookID != w.ID || ev.Workspace != "acme" || ev.Reason != "gone" || ev.LastStatus != 410 {
		t.Errorf("operational event = %+v", ev)
	}
	got, err := h.store.Get(context.Background(), "acme", w.ID)
	if err != nil || !got.Disabled || got.DisabledReason != "gone" || got.DisabledAt.IsZero() {
		t.Fatalf("after 410: %+v, %v", got, err)
	}
	if v := value(t, h, "webhookd_webhooks_auto_disabled_total", "reason", "gone"); v != 1 {
		t.Errorf("auto-disabled{gone} = %v, want 1", v)
	}
	// Disabled: no new jobs. The operational event itself is not a
	// malformed event.
	h.publish("events.acme.workflowRun.completed", completed, "e2")
	time.Sleep(time.Second)
	if n := r.count(); n != 1 {
		t.Errorf("disabled webhook got %d requests, want 1", n)
	}
	if v := value(t, h, "webhookd_events_rejected_total", "", ""); v != 0 {
		t.Errorf("events rejected = %v, want 0 (the webhook.disabled event is ours)", v)
	}
	gone.Store(false)
	if _, err := h.store.Enable(context.Background(), "acme", w.ID); err != nil {
		t.Fatal(err)
	}
	h.publish("events.acme.workflowRun.completed", completed, "e3")
	waitFor(t, 10*time.Second, "delivery after enable", func() bool { return r.count() >= 2 })
}

// TestFailingForTooLongDisablesAndRecordsPending: no success for
// DisableAfter disables the webhook; its pending jobs become failure
// records with reason "disabled".
func TestFailingForTooLongDisablesAndRecordsPending(t *testing.T) {
	h := newHarness(t, harnessOpts{
		policy: retry.Policy{Initial: 100 * time.Millisecond, MaxInterval: 200 * time.Millisecond, MaxAge: time.Hour},
		cfg: func(c *dispatcher.Config) {
			c.DisableAfter = 1500 * time.Millisecond
			c.Breaker = breaker.Config{FailureThreshold: 1000}
		}, disabler: true})
	r := newReceiver(t, func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) })
	w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	for i := range 5 {
		h.publish("events.acme.workflowRun.completed", completed, "e"+strconv.Itoa(i))
	}
	waitFor(t, 15*time.Second, "disabled for failing", func() bool {
		got, err := h.store.Get(context.Background(), "acme", w.ID)
		return err == nil && got.Disabled && got.DisabledReason == "failing"
	})
	waitAllDisabled(t, h, w.ID, 5)
}

// waitAllDisabled waits until webhook id of workspace acme has exactly n
// failure records, each with reason disabled.
func waitAllDisabled(t *testing.T, h *harness, id string, n int) {
	t.Helper()
	waitFor(t, 15*time.Second, "every pending delivery recorded as failed", func() bool {
		f, err := h.store.Failures(context.Background(), "acme", id, 100)
		if err != nil || len(f) != n {
			return false
		}
		for _, x := range f {
			if x.Reason != "disabled" {
				return false
			}
		}
		return true
	})
}

// TestTwoInstancesHonourOneCircuit: two dispatchers share the work and a
// health bucket; a circuit opened by one is open on both.
func TestTwoInstancesHonourOneCircuit(t *testing.T) {
	sh := &sharedHealth{t: t}
	open := func(c *dispatcher.Config) { c.Breaker = breaker.Config{FailureThreshold: 2, Cooldown: time.Minute} }
	a := newHarness(t, harnessOpts{cfg: sh.cfg(0, open)})
	b := a.second(t, sh.cfg(1, open))
	sh.started(a, b)
	stores := sh.stores
	r := newReceiver(t, func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) })
	w := a.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	for i := range 10 {
		a.publish("events.acme.workflowRun.completed", completed, "e"+strconv.Itoa(i))
	}
	waitFor(t, 15*time.Second, "circuit open on both instances", func() bool {
		return value(t, a, "webhookd_circuits_open", "", "") == 1 && value(t, b, "webhookd_circuits_open", "", "") == 1
	})
	// The shared record converges within moments, however the two
	// instances' records of their last failures interleaved.
	waitFor(t, 5*time.Second, "the shared record says circuit_open on both", func() bool {
		return stores[0].Health(w.ID).State == health.CircuitOpen && stores[1].Health(w.ID).State == health.CircuitOpen
	})
	// With a one-minute cool-down, nothing more reaches the receiver.
	seen := r.count()
	time.Sleep(1500 * time.Millisecond)
	if r.count() != seen {
		t.Errorf("attempts continued with the circuit open: %d -> %d", seen, r.count())
	}
}

// TestDisabledWebhookLeavesTheOpenCircuits: a webhook disabled for failing
// with its circuit open is no longer counted in webhookd_circuits_open
// (it takes no attempts, so its circuit would otherwise stay "open" until
// a restart and keep the alert firing), and its deliveries parked by the
// open circuit are recorded as failed once their cool-down brings them
// back, one record per event.
func TestDisabledWebhookLeavesTheOpenCircuits(t *testing.T) {
	h := newHarness(t, harnessOpts{
		policy: retry.Policy{Initial: 100 * time.Millisecond, MaxInterval: 200 * time.Millisecond, MaxAge: time.Hour},
		cfg: func(c *dispatcher.Config) {
			c.DisableAfter = 1500 * time.Millisecond
			c.Breaker = breaker.Config{FailureThreshold: 2, Cooldown: 500 * time.Millisecond, MaxCooldown: time.Second}
		}, disabler: true})
	r := newReceiver(t, func(_ int, w http.ResponseWriter) { w.WriteHeader(http.StatusInternalServerError) })
	w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	const n = 20
	for i := range n {
		h.publish("events.acme.workflowRun.completed", completed, "e"+strconv.Itoa(i))
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, 15*time.Second, "circuit open", func() bool {
		return value(t, h, "webhookd_breaker_transitions_total", "to", "open") > 0
	})
	waitFor(t, 15*time.Second, "disabled for failing", func() bool {
		got, err := h.store.Get(context.Background(), "acme", w.ID)
		return err == nil && got.Disabled && got.DisabledReason == "failing"
	})
	waitFor(t, 5*time.Second, "circuits_open back to 0", func() bool {
		return value(t, h, "webhookd_circuits_open", "", "") == 0
	})
	waitAllDisabled(t, h, w.ID, n)
}

// TestCircuitOpenedElsewhereIsAdopted isolates the sharing of a circuit:
// instance B's own breaker could never open (a threshold of 1000), so when
// B stops attempting, it is because it adopted the circuit A opened, from
// the shared health record. It logs how long that took.
func TestCircuitOpenedElsewhereIsAdopted(t *testing.T) {
	sh := &sharedHealth{t: t}
	instance := func(threshold int, agent string) func(c *dispatcher.Config) {
		return func(c *dispatcher.Config) {
			c.UserAgent = agent
			c.Breaker = breaker.Config{FailureThreshold: threshold, Cooldown: time.Minute}
		}
	}
	a := newHarness(t, harnessOpts{cfg: sh.cfg(0, instance(2, "instance-a"))})
	b := a.second(t, sh.cfg(1, instance(1000, "instance-b")))
	sh.started(a, b)
	var fromB atomic.Int64
	r := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.UserAgent() == "instance-b" {
			fromB.Add(1)
		}
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(r.Close)
	w := a.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")

	stop := make(chan struct{})
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			a.publish("events.acme.workflowRun.completed", completed, "e"+strconv.Itoa(i))
		}
	}()
	defer func() { close(stop); <-published }()

	waitFor(t, 15*time.Second, "circuit open on A", func() bool { return value(t, a, "webhookd_circuits_open", "", "") == 1 })
	opened := time.Now()
	waitFor(t, 5*time.Second, "B adopts A's circuit", func() bool {
		return b.disp.Health(w.ID).State == health.CircuitOpen && value(t, b, "webhookd_circuits_open", "", "") == 1
	})
	t.Logf("B honoured the circuit %s after A opened it", time.Since(opened).Round(time.Millisecond))
	// Jobs B already held may still be in flight; after that, with a
	// one-minute cool-down, B attempts nothing while events keep coming.
	time.Sleep(500 * time.Millisecond)
	seen := fromB.Load()
	time.Sleep(2 * time.Second)
	if got := fromB.Load(); got != seen {
		t.Errorf("B kept attempting after adopting the open circuit: %d -> %d requests", seen, got)
	}
	if v := value(t, b, "webhookd_breaker_transitions_total", "to", "open"); v != 1 {
		t.Errorf("B's transitions to open = %v, want 1 (adopted)", v)
	}
}

// sharedHealth gives two dispatchers one health bucket, as two instances
// on one NATS have: each opens its own health.Store on its connection,
// and a store's changes reach its dispatcher once started has named it.
type sharedHealth struct {
	t      *testing.T
	mu     sync.Mutex
	disps  [2]*dispatcher.Dispatcher
	stores [2]*health.Store
}

// cfg returns instance i's Config hook: its health store, then more.
func (s *sharedHealth) cfg(i int, more func(*dispatcher.Config)) func(*dispatcher.Config) {
	t := s.t
	return func(c *dispatcher.Config) {
		js, err := jetstream.New(c.Conn)
		if err != nil {
			t.Fatal(err)
		}
		hs, err := health.New(health.Config{JetStream: js, OnChange: func(r health.Record) {
			s.mu.Lock()
			d := s.disps[i]
			s.mu.Unlock()
			if d != nil {
				d.ObserveHealth(r)
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		s.stores[i] = hs
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = hs.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		c.Health = hs
		more(c)
	}
}

// started names the two running dispatchers, so their stores' changes
// reach them.
func (s *sharedHealth) started(a, b *harness) {
	s.mu.Lock()
	s.disps[0], s.disps[1] = a.disp, b.disp
	s.mu.Unlock()
}
