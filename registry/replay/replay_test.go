package replay

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
)

const (
	ws        = "acme"
	completed = events.WorkflowRunCompleted
)

// window publishes events around a window and returns [since, until):
// since is the stored time of "in-1" exactly, until that of "after-1".
func window(e *env) (since, until time.Time) {
	e.publish(ws, completed, "before-1", body(completed, "WF-1"))
	since = e.publish(ws, completed, "in-1", body(completed, "WF-1"))
	e.publish("other", completed, "in-other-ws", body(completed, "WF-1"))
	e.publish(ws, events.WorkflowRunFailed, "in-other-type", body(events.WorkflowRunFailed, "WF-1"))
	e.publish(ws, completed, "in-wf2", body(completed, "WF-2"))
	e.publish(ws, completed, "in-no-wf", body(completed, ""))
	e.publish(ws, completed, "in-malformed", `not json`)
	e.publish(ws, completed, "in-2", body(completed, "WF-1"))
	until = e.publish(ws, completed, "after-1", body(completed, "WF-1"))
	e.publish(ws, completed, "after-2", body(completed, "WF-1"))
	return since, until
}

// TestWindowAndMatch: exactly the events of [since, until) that match the
// webhook are replayed, each once; other workspaces, event types and
// workflows are not, and malformed events are counted but not replayed.
func TestWindowAndMatch(t *testing.T) {
	e := newEnv(t)
	since, until := window(e)
	reg := prometheus.NewRegistry()
	cfg := e.config(e.js, "a")
	cfg.Failed, cfg.Registerer = failedSet{"in-wf2": true, "in-2": true, "before-1": true, "after-1": true}, reg
	m, _ := e.start(cfg)
	for _, tc := range []struct {
		name, workflow, status string
		want                   []string
		matched, skipped       int64
	}{
		{"every workflow", "", "", []string{"in-1", "in-wf2", "in-no-wf", "in-2"}, 4, 0},
		{"one workflow", "WF-1", "all", []string{"in-1", "in-2"}, 2, 0},
		{"only failed", "", "failed", []string{"in-wf2", "in-2"}, 4, 2},
		{"only failed of one workflow", "WF-1", "failed", []string{"in-2"}, 2, 1},
		{"a workflow with no events", "WF-9", "", nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "wh_" + tc.name
			e.wh.put(registry.Webhook{ID: id, Workspace: ws, EventType: completed, WorkflowID: tc.workflow})
			j, err := m.Start(t.Context(), Request{Workspace: ws, WebhookID: id, Since: since, Until: until, Status: tc.status})
			if err != nil {
				t.Fatal(err)
			}
			if j.State != StateQueued || j.Status == "" {
				t.Errorf("Start returned state %q status %q, want queued and a status", j.State, j.Status)
			}
			j = waitJob(t, m, ws, j.ID, "the job to end", finished)
			if j.State != StateSucceeded {
				t.Fatalf("job %s: %q", j.State, j.Error)
			}
			got := e.enq.ids(j.ID)
			if !slices.Equal(got, tc.want) {
				t.Errorf("replayed %v, want %v", got, tc.want)
			}
			want := Job{Scanned: 5, Matched: tc.matched, Enqueued: int64(len(tc.want)), Skipped: tc.skipped, Malformed: 1}
			if j.Scanned != want.Scanned || j.Matched != want.Matched || j.Enqueued != want.Enqueued ||
				j.Skipped != want.Skipped || j.Malformed != want.Malformed {
				t.Errorf("counters scanned/matched/enqueued/skipped/malformed = %d/%d/%d/%d/%d, want %d/%d/%d/%d/%d",
					j.Scanned, j.Matched, j.Enqueued, j.Skipped, j.Malformed,
					want.Scanned, want.Matched, want.Enqueued, want.Skipped, want.Malformed)
			}
			if j.StartedAt.IsZero() || j.FinishedAt.IsZero() || j.Owner != "a" {
				t.Errorf("times or owner not recorded: %+v", j)
			}
		})
	}
	if got := testutil.ToFloat64(m.m.replays.WithLabelValues(StateSucceeded)); got != 5 {
		t.Errorf("webhookd_replays_total{outcome=succeeded} = %v, want 5", got)
	}
	if got := testutil.ToFloat64(m.m.deliveries); got != 9 {
		t.Errorf("webhookd_replay_deliveries_total = %v, want 9", got)
	}
}

// TestEmptyWindow: a window with no events ends at once, not waiting for
// events that will never come.
func TestEmptyWindow(t *testing.T) {
	e := newEnv(t)
	e.wh.put(registry.Webhook{ID: "wh_1", Workspace: ws, EventType: completed})
	e.publish(ws, completed, "old", body(completed, ""))
	m, _ := e.start(e.config(e.js, "a"))
	now := time.Now()
	for _, w := range []struct{ since, until time.Time }{
		{now.Add(-time.Hour), now.Add(-30 * time.Minute)}, // before every event: stops at the first
		{now.Add(-time.Millisecond), now},                 // after every event: the subject's last is older
	} {
		j, err := m.Start(t.Context(), Request{Workspace: ws, WebhookID: "wh_1", Since: w.since, Until: w.until})
		if err != nil {
			t.Fatal(err)
		}
		j = waitJob(t, m, ws, j.ID, "the job to end", finished)
		if j.State != StateSucceeded || j.Scanned != 0 || j.Enqueued != 0 {
			t.Errorf("job %+v, want succeeded with nothing scanned", j)
		}
	}
}

// TestRate: a job re-delivers no faster than Rate (an upper bound with
// room, never a timing to the millisecond).
func TestRate(t *testing.T) {
	e := newEnv(t)
	e.wh.put(registry.Webhook{ID: "wh_1", Workspace: ws, EventType: completed})
	since := time.Now().Add(-time.Second)
	const n, perSecond = 21, 20.0
	for i := range n {
		e.publish(ws, completed, "e-"+string(rune('a'+i)), body(completed, ""))
	}
	cfg := e.config(e.js, "a")
	cfg.Rate = perSecond
	m, _ := e.start(cfg)
	j, err := m.Start(t.Context(), Request{Workspace: ws, WebhookID: "wh_1", Since: since, Until: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, m, ws, j.ID, "the job to end", finished)
	e.enq.mu.Lock()
	at := slices.Clone(e.enq.at)
	e.enq.mu.Unlock()
	if len(at) != n {
		t.Fatalf("%d re-deliveries, want %d", len(at), n)
	}
	// n-1 gaps of 1/rate each: 1s. Allow 20% for the limiter's and the
	// clock's rounding; faster means the limit does not hold.
	if took, least := at[n-1].Sub(at[0]), time.Duration(0.8*float64(n-1)/perSecond*float64(time.Second)); took < least {
		t.Errorf("%d re-deliveries took %s, want at least %s at %v/s", n, took, least, perSecond)
	}
}

// TestWebhookDeletedMidReplay: deleting the webhook ends its replay as
// failed, saying why, and stops re-delivering.
func TestWebhookDeletedMidReplay(t *testing.T) {
	e := newEnv(t)
	e.wh.put(registry.Webhook{ID: "wh_1", Workspace: ws, EventType: completed})
	since := time.Now().Add(-time.Second)
	for i := range 5 {
		e.publish(ws, completed, "e-"+string(rune('a'+i)), body(completed, ""))
	}
	e.enq.gate = make(chan struct{})
	m, _ := e.start(e.config(e.js, "a"))
	j, err := m.Start(t.Context(), Request{Workspace: ws, WebhookID: "wh_1", Since: since, Until: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	e.enq.gate <- struct{}{} // first delivery stored
	waitFor(t, "the first re-delivery", func() bool { return e.enq.count() == 1 })
	e.wh.remove("wh_1")
	close(e.enq.gate) // the second, already under way, completes; no third
	j = waitJob(t, m, ws, j.ID, "the job to end", finished)
	if j.State != StateFailed || j.Error != "the webhook was deleted" {
		t.Errorf("job %s %q, want failed because the webhook was deleted", j.State, j.Error)
	}
	if got := e.enq.count(); got > 2 {
		t.Errorf("%d re-deliveries after the webhook was deleted", got)
	}
}

// TestStartValidation: every invalid field is named, in an error that is
// ErrInvalid and a registry.ValidationError (the API's 422); an unknown
// webhook or another workspace's is ErrNotFound (404).
func TestStartValidation(t *testing.T) {
	e := newEnv(t)
	e.wh.put(registry.Webhook{ID: "wh_1", Workspace: ws, EventType: completed})
	e.wh.put(registry.Webhook{ID: "wh_off", Workspace: ws, EventType: completed, Disabled: true})
	m, _ := e.start(e.config(e.js, "a")) // Failed is nil
	now := time.Now()
	hour := now.Add(-time.Hour)
	for _, tc := range []struct {
		name   string
		req    Request
		fields []string // invalid fields, or nil for ErrNotFound
	}{
		{"no times", Request{WebhookID: "wh_1"}, []string{"since", "until"}},
		{"until before since", Request{WebhookID: "wh_1", Since: now.Add(-time.Minute), Until: hour}, []string{"until"}},
		{"until equal to since", Request{WebhookID: "wh_1", Since: hour, Until: hour}, []string{"until"}},
		{"until in the future", Request{WebhookID: "wh_1", Since: hour, Until: now.Add(time.Hour)}, []string{"until"}},
		{"since in the future", Request{WebhookID: "wh_1", Since: now.Add(time.Hour), Until: now}, []string{"since"}},
		{"unknown status", Request{WebhookID: "wh_1", Since: hour, Until: now, Status: "FAILED"}, []string{"status"}},
		{"failed without a source", Request{WebhookID: "wh_1", Since: hour, Until: now, Status: "failed"}, []string{"status"}},
		{"all at once", Request{WebhookID: "wh_1", Until: now.Add(time.Hour), Status: "x"}, []string{"since", "until", "status"}},
		{"disabled webhook", Request{WebhookID: "wh_off", Since: hour, Until: now}, []string{"webhook"}},
		{"unknown webhook", Request{WebhookID: "wh_nope", Since: hour, Until: now}, nil},
		{"another workspace's webhook", Request{Workspace: "other", WebhookID: "wh_1", Since: hour, Until: now}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.req.Workspace == "" {
				tc.req.Workspace = ws
			}
			_, err := m.Start(t.Context(), tc.req)
			if tc.fields == nil {
				if !errors.Is(err, ErrNotFound) || !errors.Is(err, registry.ErrNotFound) {
					t.Fatalf("err %v, want ErrNotFound", err)
				}
				return
			}
			var ve *registry.ValidationError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) {
				t.Fatalf("err %v, want ErrInvalid as a registry.ValidationError", err)
			}
			var got []string
			for f := range ve.Fields {
				got = append(got, f)
			}
			slices.Sort(got)
			slices.Sort(tc.fields)
			if !slices.Equal(got, tc.fields) {
				t.Errorf("fields %v (%v), want %v", got, ve.Fields, tc.fields)
			}
		})
	}
	// Until a little in the future is clamped to now: events not stored
	// yet cannot be in the window.
	j, err := m.Start(t.Context(), Request{Workspace: ws, WebhookID: "wh_1", Since: hour, Until: time.Now().Add(30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if j.Until.After(time.Now()) || j.Status != StatusAll {
		t.Errorf("until %s status %q, want until clamped to now and status all", j.Until, j.Status)
	}
}

// TestGetIsolation: a job is found only in its own workspace; ids that
// were never issued are not found either, and nothing reaches a key
// filter.
func TestGetIsolation(t *testing.T) {
	e := newEnv(t)
	e.wh.put(registry.Webhook{ID: "wh_1", Workspace: ws, EventType: completed})
	m, _ := e.start(e.config(e.js, "a"))
	j, err := m.Start(t.Context(), Request{Workspace: ws, WebhookID: "wh_1", Since: time.Now().Add(-time.Hour), Until: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(t.Context(), ws, j.ID); err != nil {
		t.Fatalf("own workspace: %v", err)
	}
	for _, tc := range []struct{ ws, id string }{
		{"other", j.ID}, {ws, "rp_0000"}, {ws, "*"}, {ws, ">"}, {"*", j.ID}, {"", j.ID}, {ws, j.ID + ".x"},
	} {
		if _, err := m.Get(t.Context(), tc.ws, tc.id); !errors.Is(err, ErrNotFound) || !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("Get(%q, %q): %v, want ErrNotFound", tc.ws, tc.id, err)
		}
		if _, err := m.Cancel(t.Context(), tc.ws, tc.id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Cancel(%q, %q): %v, want ErrNotFound", tc.ws, tc.id, err)
		}
	}
}

// TestUnavailableBeforeRun: until Run binds the bucket, the API's calls
// answer ErrUnavailable (503), not an empty result.
func TestUnavailableBeforeRun(t *testing.T) {
	e := newEnv(t)
	m, err := New(e.config(e.js, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(t.Context(), ws, newID(time.Now())); !errors.Is(err, ErrUnavailable) || !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("Get: %v, want ErrUnavailable", err)
	}
	if _, err := m.Start(t.Context(), Request{Workspace: ws}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Start: %v, want ErrUnavailable", err)
	}
}

func TestNewValidates(t *testing.T) {
	e := newEnv(t)
	for name, mut := range map[string]func(*Config){
		"no JetStream":    func(c *Config) { c.JetStream = nil },
		"no Webhooks":     func(c *Config) { c.Webhooks = nil },
		"no Enqueuer":     func(c *Config) { c.Enqueuer = nil },
		"negative rate":   func(c *Config) { c.Rate = -1 },
		"stale too short": func(c *Config) { c.StaleAfter = c.Heartbeat },
		"bad bucket":      func(c *Config) { c.Bucket = "a.b" },
		"bad prefix":      func(c *Config) { c.Decoder.Subjects.Prefix = "a.*" },
	} {
		cfg := e.config(e.js, "a")
		mut(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
