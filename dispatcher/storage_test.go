package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/dispatcher"
	"github.com/webhookd/webhookd/dispatcher/capacity"
	"github.com/webhookd/webhookd/dispatcher/retry"
	"github.com/webhookd/webhookd/dispatcher/signature"
	"github.com/webhookd/webhookd/dispatcher/transport"
	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natsconn"
	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/failurelog"
	"github.com/webhookd/webhookd/registry/health"
	"github.com/webhookd/webhookd/registry/ssrf"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// embedded starts webhookd's own embedded NATS server with the given
// limits, on a random loopback port with its store in a temp dir.
func embedded(t *testing.T, cfg natsconn.EmbeddedConfig) *natsconn.Embedded {
	t.Helper()
	cfg.Listen, cfg.StoreDir, cfg.Logger = "127.0.0.1:0", t.TempDir(), quiet
	emb, err := natsconn.StartEmbedded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	return emb
}

// harnessOn is newHarness against the NATS server at url.
func harnessOn(t *testing.T, url string, o harnessOpts) *harness {
	t.Helper()
	nc, js := natstest.Connect(t, url)
	store, err := registry.Open(registry.Config{Path: filepath.Join(t.TempDir(), "webhookd.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	client, err := transport.NewClient(transport.Config{Timeout: 2 * time.Second, Guard: &ssrf.Guard{AllowPrivate: true}})
	if err != nil {
		t.Fatal(err)
	}
	policy := o.policy
	if policy.Initial == 0 {
		policy = retry.Policy{Initial: 100 * time.Millisecond, MaxInterval: time.Second, MaxAge: time.Hour, MaxAttempts: 3}
	}
	reg := prometheus.NewRegistry()
	cfg := dispatcher.Config{
		Conn: nc, Subscriptions: store.Index(), Failures: store, Client: client,
		Retry: policy, DeliveryTimeout: 2 * time.Second, Logger: quiet, Registerer: reg,
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	h := &harness{t: t, nc: nc, js: js, store: store, reg: reg, base: cfg}
	h.start(cfg)
	return h
}

// run drives a component's Run until the test ends.
func run(t *testing.T, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = fn(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func streamState(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamState {
	t.Helper()
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State
}

func consumerInfo(t *testing.T, js jetstream.JetStream, stream, name string) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(t.Context(), stream, name)
	if err != nil {
		t.Fatal(err)
	}
	ci, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return ci
}

// eventBody is a workflowRun.completed event of exactly n bytes.
func eventBody(n int) string {
	head := `{"type":"workflowRun.completed","pad":"`
	return head + strings.Repeat("x", n-len(head)-2) + `"}`
}

// errCodeInsufficientResources is JetStream's error code for a write
// refused because the store as a whole is full.
const errCodeInsufficientResources = 10023

// fillStore publishes to a stream of its own, which has no byte limit,
// until the JetStream store as a whole refuses writes; it returns a
// function that frees the space again.
func fillStore(t *testing.T, js jetstream.JetStream) (free func()) {
	t.Helper()
	ctx := t.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FILLER", Subjects: []string{"filler"}}); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 32<<10)
	for i := 0; ; i++ {
		_, err := js.Publish(ctx, "filler", chunk)
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeInsufficientResources {
			break
		}
		if err != nil || i > 10000 {
			t.Fatalf("filling the store: %v after %d chunks", err, i)
		}
	}
	return func() {
		if err := js.DeleteStream(context.Background(), "FILLER"); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSmallStoreRefusesNewEventsAndLosesNone runs every stream and bucket
// webhookd creates with capacity.Budget's limits in a 4 MiB embedded
// store: their reservations fit. With fan-out stopped, events fill their
// stream: JetStream publishers are refused with an error, a core-NATS
// publish is not stored, and no acknowledged event is dropped. Once fan-out
// runs again every acknowledged event is delivered, and the trimmer frees
// space by purging only events already fanned out.
func TestSmallStoreRefusesNewEventsAndLosesNone(t *testing.T) {
	const store = 4 << 20
	lim := capacity.Budget(store)
	emb := embedded(t, natsconn.EmbeddedConfig{MaxStore: store})
	h := harnessOn(t, emb.ClientURL(), harnessOpts{cfg: func(c *dispatcher.Config) {
		c.EventStream.MaxBytes = lim.Events
		c.DeliveriesMaxBytes = lim.Deliveries
	}})
	ctx := t.Context()
	// The other streams, each with its share.
	if _, err := h.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "WEBHOOKD_REGISTRY", History: 1,
		Storage: jetstream.FileStorage, MaxBytes: lim.Registry}); err != nil {
		t.Fatal(err)
	}
	hs, err := health.New(health.Config{JetStream: h.js, MaxBytes: lim.Health, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	run(t, hs.Run)
	flog, err := failurelog.New(failurelog.Config{JetStream: h.js, MaxBytes: lim.Failures, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	run(t, flog.Run)
	waitFor(t, 10*time.Second, "health bucket and failure stream created within the store", func() bool {
		return hs.Ready() == nil && flog.Ready() == nil
	})
	mon, err := capacity.New(capacity.Config{JetStream: h.js, Logger: quiet, Streams: []capacity.Stream{
		{Name: "WEBHOOKD_DELIVERIES", Limit: lim.Deliveries}, {Name: "KV_WEBHOOKD_REGISTRY"},
		{Name: "KV_WEBHOOKD_HEALTH"}, {Name: "WEBHOOKD_FAILURES"}}})
	if err != nil {
		t.Fatal(err)
	}

	r := newReceiver(t, nil)
	w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	const subject = "events.acme.workflowRun.completed"
	body := eventBody(2 << 10)
	var acked []string
	for i := range 3 {
		acked = append(acked, fmt.Sprintf("before-%d", i))
		h.publish(subject, body, acked[i])
	}
	waitFor(t, 10*time.Second, "the first events delivered", func() bool { return r.count() == 3 })
	h.stop() // fan-out stops; the events stream is now the only buffer

	// Fill the events stream through JetStream, as a careful publisher.
	var refusal error
	for i := 0; refusal == nil; i++ {
		id := fmt.Sprintf("e-%d", i)
		if _, err := h.js.Publish(ctx, subject, []byte(body), jetstream.WithMsgID(id)); err != nil {
			refusal = err
			continue
		}
		acked = append(acked, id)
	}
	var apiErr *jetstream.APIError
	if !errors.As(refusal, &apiErr) || apiErr.Code != 503 || !strings.Contains(apiErr.Description, "maximum bytes exceeded") {
		t.Fatalf("publisher got %v, want JetStream's 503 maximum bytes exceeded", refusal)
	}
	if err := h.nc.Publish(subject, []byte(body)); err != nil { // a core-NATS publisher is told nothing...
		t.Fatal(err)
	}
	_ = h.nc.Flush()
	full := streamState(t, h.js, events.DefaultStreamName)
	if full.FirstSeq != 1 || full.Msgs != uint64(len(acked)) { // ...and its event is not stored
		t.Fatalf("full stream holds %d events from seq %d, want exactly the %d acknowledged, from 1", full.Msgs, full.FirstSeq, len(acked))
	}
	mon.Sample(ctx) // only the 3 fanned-out events may go; the stream stays full
	if s := streamState(t, h.js, events.DefaultStreamName); s.FirstSeq != 4 || s.Msgs != uint64(len(acked)-3) {
		t.Errorf("after a trim with fan-out stopped: %d events from seq %d, want %d from seq 4", s.Msgs, s.FirstSeq, len(acked)-3)
	}
	if err := mon.Ready(); !errors.Is(err, capacity.ErrNearlyFull) || !strings.Contains(err.Error(), events.DefaultStreamName) {
		t.Errorf("Ready() = %v, want the events stream named", err)
	}
	t.Logf("%d events of %d bytes acknowledged in a %d-byte events stream; the next publish: %v; Ready: %v",
		len(acked), len(body), lim.Events, refusal, mon.Ready())

	// Fan-out again: every acknowledged event is delivered, none twice.
	h.second(t, nil)
	waitFor(t, 60*time.Second, "every acknowledged event delivered", func() bool { return r.count() >= len(acked) })
	got := map[string]int{}
	for _, req := range r.requests() {
		got[req.header.Get("Webhook-Id")]++
	}
	for _, id := range acked {
		if got[signature.DeliveryID(id, w.ID)] == 0 {
			t.Fatalf("acknowledged event %s was never delivered", id)
		}
	}
	waitFor(t, 10*time.Second, "fan-out drained", func() bool {
		ci := consumerInfo(t, h.js, events.DefaultStreamName, "webhookd-fanout")
		return ci.NumPending == 0 && ci.NumAckPending == 0
	})
	floor := consumerInfo(t, h.js, events.DefaultStreamName, "webhookd-fanout").AckFloor.Stream
	mon.Sample(ctx)
	after := streamState(t, h.js, events.DefaultStreamName)
	if after.FirstSeq-1 > floor || float64(after.Bytes) > 0.61*float64(lim.Events) {
		t.Errorf("trimmed to seq %d (ack floor %d), %d of %d bytes; want only fanned-out events purged, down to ~60%%",
			after.FirstSeq, floor, after.Bytes, lim.Events)
	}
	if err := mon.Ready(); err != nil {
		t.Errorf("Ready() after the trim: %v", err)
	}
	if _, err := h.js.Publish(ctx, subject, []byte(body)); err != nil {
		t.Errorf("publishing after the trim: %v", err)
	}
}

// TestFailedJobPublishNeverAcksTheEvent: when the job of an event cannot be
// stored (here the whole store is full), the event stays unacknowledged and
// comes back until the job is stored, then it is delivered.
func TestFailedJobPublishNeverAcksTheEvent(t *testing.T) {
	const store = 4 << 20
	lim := capacity.Budget(store)
	emb := embedded(t, natsconn.EmbeddedConfig{MaxStore: store})
	h := harnessOn(t, emb.ClientURL(), harnessOpts{cfg: func(c *dispatcher.Config) {
		c.EventStream.MaxBytes = lim.Events
		c.DeliveriesMaxBytes = lim.Deliveries
	}})
	r := newReceiver(t, nil)
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	h.stop()
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	free := fillStore(t, h.js)
	h.second(t, nil)
	waitFor(t, 20*time.Second, "the event handed back and offered again", func() bool {
		return consumerInfo(t, h.js, events.DefaultStreamName, "webhookd-fanout").Delivered.Consumer >= 2
	})
	ci := consumerInfo(t, h.js, events.DefaultStreamName, "webhookd-fanout")
	if ci.AckFloor.Stream != 0 || r.count() != 0 {
		t.Fatalf("with its job unstored the event was acked (ack floor %d) or delivered (%d)", ci.AckFloor.Stream, r.count())
	}
	free()
	waitFor(t, 30*time.Second, "delivered once the store has room", func() bool { return r.count() == 1 })
	waitFor(t, 10*time.Second, "the event acked", func() bool {
		ci := consumerInfo(t, h.js, events.DefaultStreamName, "webhookd-fanout")
		return ci.AckFloor.Stream == 1 && ci.NumAckPending == 0
	})
}

// TestFanoutPausesWhileDeliveriesNearlyFull: fan-out takes no event while
// the deliveries stream holds 90% of DeliveriesMaxBytes; the events wait in
// their stream, and all of them go out once there is room.
func TestFanoutPausesWhileDeliveriesNearlyFull(t *testing.T) {
	const budget = 64 << 10
	h := newHarness(t, harnessOpts{cfg: func(c *dispatcher.Config) { c.DeliveriesMaxBytes = budget }})
	ctx := t.Context()
	// Stand-ins for parked jobs: 95% of the budget that nothing consumes.
	for used := 0; used < budget*95/100; used += 4 << 10 {
		if _, err := h.js.Publish(ctx, "webhookd.deliveries.sched.filler.x", make([]byte, 4<<10)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "fan-out paused", func() bool { return value(t, h, "webhookd_fanout_paused", "", "") == 1 })
	// A pull request already open when the pause came ends its round (at
	// most a second, then its batch is fanned out): the headroom above the
	// pause mark is for such work in hand.
	time.Sleep(1500 * time.Millisecond)
	r := newReceiver(t, nil)
	w := h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	const n = 20
	for i := range n {
		h.publish("events.acme.workflowRun.completed", completed, fmt.Sprintf("e%d", i))
	}
	time.Sleep(2 * time.Second)
	ci := consumerInfo(t, h.js, events.DefaultStreamName, "webhookd-fanout")
	if r.count() != 0 || ci.NumPending != n || ci.NumAckPending != 0 {
		t.Fatalf("while paused: %d delivered, %d events pending, %d held; want 0, %d, 0", r.count(), ci.NumPending, ci.NumAckPending, n)
	}
	// Manual retries and replays store jobs too: they wait with fan-out.
	ev := events.Event{ID: "manual-1", Workspace: "acme", Type: events.WorkflowRunCompleted,
		Subject: "events.acme.workflowRun.completed", Timestamp: time.Now(), Body: []byte(completed)}
	if err := h.disp.Resend(ctx, ev, w.ID, "retry"); !errors.Is(err, dispatcher.ErrDeliveriesFull) {
		t.Errorf("Resend while paused: %v, want ErrDeliveriesFull", err)
	}
	f := registry.Failure{ID: "d-1", WebhookID: w.ID, Workspace: "acme", EventID: "manual-2",
		EventType: events.WorkflowRunCompleted, Subject: ev.Subject, Body: ev.Body}
	if err := h.disp.Redeliver(ctx, f); !errors.Is(err, dispatcher.ErrDeliveriesFull) {
		t.Errorf("Redeliver while paused: %v, want ErrDeliveriesFull", err)
	}
	s, err := h.js.Stream(ctx, "WEBHOOKD_DELIVERIES")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject("webhookd.deliveries.sched.filler.x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "every event delivered after the pause", func() bool { return r.count() == n })
	if v := value(t, h, "webhookd_fanout_paused", "", ""); v != 0 {
		t.Errorf("fanout_paused = %v after resuming", v)
	}
}

// TestStoredBytesPerEventAndJob measures what one event and one delivery
// job cost in JetStream, for the README's sizing rule.
func TestStoredBytesPerEventAndJob(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	release := make(chan struct{})
	defer close(release)
	r := newReceiver(t, func(_ int, w http.ResponseWriter) { <-release })
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	body := eventBody(1024)
	h.publish("events.acme.workflowRun.completed", body, "r-9-completed")
	waitFor(t, 10*time.Second, "the attempt in progress", func() bool { return r.count() == 1 })
	ev := streamState(t, h.js, events.DefaultStreamName)
	jobs := streamState(t, h.js, "WEBHOOKD_DELIVERIES")
	if ev.Msgs != 1 || jobs.Msgs != 1 {
		t.Fatalf("%d events and %d jobs stored, want one of each", ev.Msgs, jobs.Msgs)
	}
	evOver, jobOver := int(ev.Bytes)-len(body), int(jobs.Bytes)-len(body)
	t.Logf("a %d-byte event takes %d bytes in the events stream (+%d) and its delivery job %d (+%d)",
		len(body), ev.Bytes, evOver, jobs.Bytes, jobOver)
	if evOver > 128 || jobOver > 512 {
		t.Errorf("overheads %d and %d bytes; the README's sizing rule assumes at most 128 and 512", evOver, jobOver)
	}
}
