package dispatcher

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/webhookd/webhookd/dispatcher/breaker"
	"github.com/webhookd/webhookd/registry/health"
)

// tracker turns attempt outcomes into circuit decisions and shared health
// records, and decides when a webhook is disabled. Records are written by
// one flusher goroutine, never on an attempt's path: a circuit change is
// written at once, a growing failure count at most once per flush tick, a
// healthy webhook's last success once per HealthSuccessInterval.
type tracker struct {
	d  *Dispatcher
	br *breaker.Breaker
	hs HealthStore

	mu        sync.Mutex
	dirty     map[string]health.Record // newest local view, not yet written
	writing   map[string]health.Record // taken from dirty, being written now
	disabling map[string]bool          // disable calls in progress
	wake      chan struct{}
}

func newTracker(d *Dispatcher) (*tracker, error) {
	br, err := breaker.New(d.cfg.Breaker)
	if err != nil {
		return nil, err
	}
	hs := d.cfg.Health
	if hs == nil {
		hs = &localHealth{m: make(map[string]health.Record)}
	}
	return &tracker{d: d, br: br, hs: hs, dirty: make(map[string]health.Record),
		disabling: make(map[string]bool), wake: make(chan struct{}, 1)}, nil
}

// current is the freshest record this instance knows for id.
func (t *tracker) current(id string) health.Record {
	t.mu.Lock()
	r, ok := t.dirty[id]
	if !ok {
		// Until its write returns, the store's copy is older than a
		// record being written: counting on from it would lose failures.
		r, ok = t.writing[id]
	}
	t.mu.Unlock()
	if ok {
		return r
	}
	return t.hs.Health(id)
}

// succeeding reports whether the webhook's shared record shows a success
// and no failure since: such a webhook is healthy even on a host this
// instance has not sent to lately.
func (t *tracker) succeeding(id string) bool {
	r := t.current(id)
	return !r.LastSuccessAt.IsZero() && r.ConsecutiveFailures == 0
}

// outcome is what an attempt's result means for its webhook's health.
type outcome struct {
	webhookID, workspace string
	probe                bool
	result               breaker.Result
	class                string // status class of a failure
	status               int
}

// record feeds one attempt's outcome to the breaker and the health record.
func (t *tracker) record(o outcome, now time.Time) {
	tr := t.br.Record(o.webhookID, o.probe, o.result)
	if tr.Changed {
		t.d.m.transitions.WithLabelValues(tr.To.String()).Inc()
	}
	prev := t.current(o.webhookID)
	r := prev
	r.WebhookID = o.webhookID
	urgent := tr.Changed
	if o.result == breaker.Success {
		urgent = urgent || (prev.State != "" && prev.State != health.Healthy) || prev.ConsecutiveFailures > 0
		if !urgent && now.Sub(prev.LastSuccessAt) < t.d.cfg.HealthSuccessInterval {
			return
		}
		r.State, r.ConsecutiveFailures, r.FailingSince = health.Healthy, 0, time.Time{}
		r.OpenUntil, r.Cooldown = time.Time{}, 0
		r.LastSuccessAt = now.UTC()
		t.put(r, urgent)
		return
	}
	r.ConsecutiveFailures++
	if r.FailingSince.IsZero() {
		r.FailingSince = now.UTC()
	}
	r.LastFailureAt, r.LastErrorClass, r.LastStatus = now.UTC(), o.class, o.status
	if prev.State == health.CircuitOpen && prev.OpenUntil.After(now) {
		// Another instance opened the circuit and its record reached us
		// before its watch event did: a failure here must not downgrade
		// the shared record to "failing".
		if a := t.br.Adopt(o.webhookID, prev.OpenUntil, prev.Cooldown, prev.ConsecutiveFailures); a.Changed {
			t.d.m.transitions.WithLabelValues(a.To.String()).Inc()
		}
	}
	st := t.br.Status(o.webhookID)
	if st.State == breaker.Closed {
		r.State, r.OpenUntil, r.Cooldown = health.Failing, time.Time{}, 0
	} else {
		r.State, r.OpenUntil, r.Cooldown = health.CircuitOpen, st.OpenUntil.UTC(), st.Cooldown
	}
	urgent = urgent || prev.State != r.State
	t.put(r, urgent)

	switch {
	case o.status == 410 && t.d.cfg.DisableOnGone:
		t.disable(o.webhookID, o.workspace, "gone", r)
	case t.d.cfg.DisableAfter > 0 && now.Sub(r.FailingSince) >= t.d.cfg.DisableAfter:
		t.disable(o.webhookID, o.workspace, "failing", r)
	}
}

func (t *tracker) put(r health.Record, urgent bool) {
	t.mu.Lock()
	t.dirty[r.WebhookID] = r
	t.mu.Unlock()
	if urgent {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// observe applies a record written by any instance: a circuit opened
// elsewhere is honoured here, and a healthy (or reset) record closes the
// circuit here too.
func (t *tracker) observe(r health.Record) {
	var tr breaker.Transition
	switch r.State {
	case health.CircuitOpen:
		tr = t.br.Adopt(r.WebhookID, r.OpenUntil, r.Cooldown, r.ConsecutiveFailures)
		// A failure of ours not yet shared must not overwrite the open
		// circuit with "failing" when it is written.
		t.mu.Lock()
		if dr, ok := t.dirty[r.WebhookID]; ok && dr.State != health.CircuitOpen {
			dr.State, dr.OpenUntil, dr.Cooldown = health.CircuitOpen, r.OpenUntil, r.Cooldown
			dr.ConsecutiveFailures = max(dr.ConsecutiveFailures, r.ConsecutiveFailures)
			t.dirty[r.WebhookID] = dr
		}
		t.mu.Unlock()
	case health.Failing:
		// Another instance's failure, written before it learnt that the
		// circuit is open, must not leave the shared record saying
		// "failing": whoever holds the circuit open writes it again.
		if st := t.br.Status(r.WebhookID); st.State != breaker.Closed {
			r.State, r.OpenUntil, r.Cooldown = health.CircuitOpen, st.OpenUntil.UTC(), st.Cooldown
			r.ConsecutiveFailures = max(r.ConsecutiveFailures, st.Failures)
			t.mu.Lock()
			if dr, ok := t.dirty[r.WebhookID]; ok && dr.State == health.CircuitOpen {
				r = dr // our own newer view
			}
			t.mu.Unlock()
			t.put(r, true)
		}
		return
	default: // healthy, or deleted by a reset
		tr = t.br.Reset(r.WebhookID)
	}
	if tr.Changed {
		t.d.m.transitions.WithLabelValues(tr.To.String()).Inc()
	}
}

// flush writes the dirty records until ctx ends, then once more.
func (t *tracker) flush(ctx context.Context) {
	tick := time.NewTicker(t.d.cfg.HealthFlushInterval)
	defer tick.Stop()
	for n := 0; ; {
		select {
		case <-ctx.Done():
			t.writeDirty()
			return
		case <-tick.C:
		case <-t.wake:
		}
		t.writeDirty()
		if n++; n%10 == 0 {
			t.forgetDeleted()
		}
		t.d.m.circuitsOpen.Set(float64(t.br.OpenCount()))
	}
}

// forgetDeleted drops the circuits of webhooks that no longer exist or are
// disabled, so the breaker (and webhookd_circuits_open) holds only live,
// failing webhooks on every instance. A disabled webhook takes no attempt,
// so its circuit would otherwise stay open here until a restart; its shared
// health record is kept for inspection, and enabling it resets both.
func (t *tracker) forgetDeleted() {
	for _, id := range t.br.Keys() {
		if w, ok := t.d.cfg.Subscriptions.Get(id); !ok || w.Disabled {
			t.br.Reset(id)
		}
	}
}

func (t *tracker) writeDirty() {
	t.mu.Lock()
	batch := t.dirty
	t.dirty = make(map[string]health.Record, len(batch))
	t.writing = batch
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.writing = nil
		t.mu.Unlock()
	}()
	// Each write is a round trip: in an outage that changes thousands of
	// records at once, one at a time would take seconds to share what
	// every instance needs within one.
	sem := make(chan struct{}, max(t.d.cfg.HealthWriters, 1))
	var wg sync.WaitGroup
	for id, r := range batch {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := t.hs.Put(ctx, r)
			cancel()
			if err != nil {
				t.d.log.Warn("health record not shared; will retry", "webhook", id, "err", err)
				t.mu.Lock()
				if _, newer := t.dirty[id]; !newer {
					t.dirty[id] = r
				}
				t.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// disable turns the webhook off in the registry (once, in the background)
// and announces it on <prefix>.<workspace>.webhook.disabled.
func (t *tracker) disable(id, workspace, reason string, r health.Record) {
	if t.d.cfg.Disabler == nil {
		return
	}
	t.mu.Lock()
	if t.disabling[id] {
		t.mu.Unlock()
		return
	}
	t.disabling[id] = true
	t.mu.Unlock()
	t.d.background.Go(func() {
		defer func() {
			t.mu.Lock()
			delete(t.disabling, id)
			t.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		now := time.Now().UTC()
		wh, changed, err := t.d.cfg.Disabler.Disable(ctx, id, reason, now)
		if err != nil {
			t.d.log.Error("auto-disable failed; will try again on the next failure", "webhook", id, "reason", reason, "err", err)
			return
		}
		if !changed {
			return
		}
		t.d.m.autoDisabled.WithLabelValues(reason).Inc()
		t.br.Reset(id) // no attempts now: not an open circuit (see forgetDeleted)
		t.d.log.Warn("webhook disabled", "webhook", id, "workspace", wh.Workspace, "reason", reason,
			"failing_since", r.FailingSince, "last_status", r.LastStatus, "last_error_class", r.LastErrorClass)
		body, _ := json.Marshal(disabledEvent{
			Type: "webhook.disabled", WebhookID: id, Workspace: wh.Workspace, EventType: string(wh.EventType),
			WorkflowID: wh.WorkflowID, Reason: reason, DisabledAt: now, FailingSince: r.FailingSince,
			LastStatus: r.LastStatus, LastErrorClass: r.LastErrorClass,
		})
		t.announce(wh.Workspace, id, now, body)
	})
}

// announce publishes the webhook.disabled event, retrying while NATS or the
// events stream is unavailable: operators alert on it, so a blip must not
// lose it. Its message id makes a retry after a lost ack store it once. A
// stopping instance gives up and says so.
func (t *tracker) announce(workspace, id string, at time.Time, body []byte) {
	m := &nats.Msg{Subject: t.d.cfg.EventStream.Subjects.Operational(workspace, "webhook.disabled"), Data: body,
		Header: nats.Header{"Nats-Msg-Id": []string{"webhook.disabled." + id + "." + strconv.FormatInt(at.UnixMilli(), 10)}}}
	for wait := t.d.cfg.AnnounceRetry; ; wait = min(2*wait, 8*t.d.cfg.AnnounceRetry) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := t.d.js.PublishMsg(ctx, m)
		cancel()
		if err == nil {
			return
		}
		if t.d.stopping.Load() {
			t.d.log.Error("webhook.disabled event not published before shutdown", "webhook", id, "err", err)
			return
		}
		t.d.log.Warn("publish webhook.disabled event failed; retrying", "webhook", id, "err", err, "in", wait)
		time.Sleep(wait)
	}
}

// disabledEvent is the body of the operational event
// <prefix>.<workspace>.webhook.disabled.
type disabledEvent struct {
	Type           string    `json:"type"`
	WebhookID      string    `json:"webhookId"`
	Workspace      string    `json:"workspace"`
	EventType      string    `json:"eventType"`
	WorkflowID     string    `json:"workflowId"`
	Reason         string    `json:"reason"`
	DisabledAt     time.Time `json:"disabledAt"`
	FailingSince   time.Time `json:"failingSince,omitzero"`
	LastStatus     int       `json:"lastStatus,omitempty"`
	LastErrorClass string    `json:"lastErrorClass,omitempty"`
}

// reset forgets id's health here and on every instance.
func (t *tracker) reset(ctx context.Context, id string) error {
	t.mu.Lock()
	delete(t.dirty, id)
	t.mu.Unlock()
	if tr := t.br.Reset(id); tr.Changed {
		t.d.m.transitions.WithLabelValues(tr.To.String()).Inc()
	}
	return t.hs.Reset(ctx, id)
}

// localHealth keeps health in this process when no shared store is set.
type localHealth struct {
	mu sync.RWMutex
	m  map[string]health.Record
}

func (l *localHealth) Health(id string) health.Record {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.m[id]
}

func (l *localHealth) Put(_ context.Context, r health.Record) error {
	l.mu.Lock()
	l.m[r.WebhookID] = r
	l.mu.Unlock()
	return nil
}

func (l *localHealth) Reset(_ context.Context, id string) error {
	l.mu.Lock()
	delete(l.m, id)
	l.mu.Unlock()
	return nil
}
