package replay

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
)

var subjects = events.Subjects{Prefix: "events"}

// env is one NATS server with the events stream, shared by the managers
// of a test.
type env struct {
	t   *testing.T
	url string
	js  jetstream.JetStream
	st  jetstream.Stream
	wh  *webhooks
	enq *recorder
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ns := natstest.JetStream(t)
	e := &env{t: t, url: ns.ClientURL(), wh: &webhooks{m: map[string]*registry.Webhook{}}, enq: &recorder{}}
	e.js = e.connect()
	st, err := events.EnsureStream(t.Context(), e.js, events.StreamConfig{Subjects: subjects})
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	return e
}

func (e *env) connect() jetstream.JetStream {
	e.t.Helper()
	js, _ := e.connectConn()
	return js
}

func (e *env) connectConn() (jetstream.JetStream, *nats.Conn) {
	e.t.Helper()
	nc, err := nats.Connect(e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	return js, nc
}

// config is a fast test configuration over js.
func (e *env) config(js jetstream.JetStream, name string) Config {
	return Config{JetStream: js, Decoder: events.Decoder{Subjects: subjects}, Webhooks: e.wh, Enqueuer: e.enq,
		Heartbeat: 50 * time.Millisecond, StaleAfter: time.Second, Instance: name, Rate: 1000}
}

// start runs a Manager until stop (or the test's end) and waits until it
// has bound the bucket; stop checks that Run returns promptly.
func (e *env) start(cfg Config) (m *Manager, stop func()) {
	e.t.Helper()
	m, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				e.t.Error("Run did not return after its context ended")
			}
		})
	}
	e.t.Cleanup(stop)
	waitFor(e.t, "the bucket", func() bool { return m.Ready() == nil })
	return m, stop
}

// publish stores an event and returns its stream timestamp.
func (e *env) publish(ws string, typ events.Type, id, body string) time.Time {
	e.t.Helper()
	ack, err := e.js.Publish(e.t.Context(), subjects.For(ws, typ), []byte(body), jetstream.WithMsgID(id))
	if err != nil {
		e.t.Fatal(err)
	}
	m, err := e.st.GetMsg(e.t.Context(), ack.Sequence)
	if err != nil {
		e.t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // distinct timestamps, so windows can be exact
	return m.Time
}

func body(typ events.Type, wf string) string {
	if wf == "" {
		return fmt.Sprintf(`{"type":%q}`, typ)
	}
	return fmt.Sprintf(`{"type":%q,"workflowId":%q}`, typ, wf)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitJob polls Get until the job satisfies cond and returns it.
func waitJob(t *testing.T, m *Manager, ws, id, what string, cond func(Job) bool) Job {
	t.Helper()
	var j Job
	waitFor(t, what, func() bool {
		var err error
		j, err = m.Get(t.Context(), ws, id)
		if err != nil {
			t.Fatalf("Get %s: %v", id, err)
		}
		return cond(j)
	})
	return j
}

func finished(j Job) bool { return j.Finished() }

// webhooks is the registry index as a map.
type webhooks struct {
	mu sync.Mutex
	m  map[string]*registry.Webhook
}

func (w *webhooks) Get(id string) (*registry.Webhook, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wh, ok := w.m[id]
	return wh, ok
}

func (w *webhooks) put(wh registry.Webhook) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.m[wh.ID] = &wh
}

func (w *webhooks) remove(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, id)
}

// recorder is the dispatcher's side: it records each re-delivery, and
// can be made to wait before storing one.
type recorder struct {
	mu    sync.Mutex
	calls []Delivery
	at    []time.Time
	gate  chan struct{} // when set, each call waits for a receive
}

func (r *recorder) Replay(ctx context.Context, d Delivery) error {
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, d)
	r.at = append(r.at, time.Now())
	return nil
}

// ids returns the event ids replayed by job (all jobs if "").
func (r *recorder) ids(job string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, d := range r.calls {
		if job == "" || d.ReplayID == job {
			out = append(out, d.Event.ID)
		}
	}
	return out
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// failedSet is a FailedSource with a fixed set.
type failedSet map[string]bool

func (f failedSet) FailedEventIDs(context.Context, string, string) (map[string]bool, error) {
	return f, nil
}
