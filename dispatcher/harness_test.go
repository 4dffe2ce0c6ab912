package dispatcher_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/dispatcher"
	"github.com/webhookd/webhookd/dispatcher/retry"
	"github.com/webhookd/webhookd/dispatcher/transport"
	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/ssrf"
)

// harness is a real pipeline: an in-process NATS server with JetStream on
// a random port, a bbolt registry in a temp dir, and a running Dispatcher.
type harness struct {
	t     *testing.T
	nc    *nats.Conn
	js    jetstream.JetStream
	store *registry.Store
	reg   *prometheus.Registry
	disp  *dispatcher.Dispatcher
	stop  func()
	base  dispatcher.Config // as built, for a second instance
}

type harnessOpts struct {
	guard  *ssrf.Guard // nil: private targets allowed (httptest is loopback)
	policy retry.Policy
	cfg    func(*dispatcher.Config)
	// disabler lets the dispatcher disable webhooks in the harness store.
	disabler bool
}

func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	nc, js := natstest.Client(t, natstest.JetStream(t))
	store, err := registry.Open(registry.Config{Path: filepath.Join(t.TempDir(), "webhookd.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	guard := o.guard
	if guard == nil {
		guard = &ssrf.Guard{AllowPrivate: true}
	}
	client, err := transport.NewClient(transport.Config{Timeout: 2 * time.Second, Guard: guard})
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
		Retry: policy, DeliveryTimeout: 2 * time.Second,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registerer: reg,
	}
	if o.disabler {
		cfg.Disabler = store
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	h := &harness{t: t, nc: nc, js: js, store: store, reg: reg, base: cfg}
	h.start(cfg)
	return h
}

// second starts another dispatcher on the same NATS server and registry,
// as a second instance would run: the two share the durable consumers.
func (h *harness) second(t *testing.T, cfgFn func(*dispatcher.Config)) *harness {
	nc, err := nats.Connect(h.nc.ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := h.base
	cfg.Conn = nc
	cfg.Registerer = prometheus.NewRegistry()
	if cfgFn != nil {
		cfgFn(&cfg)
	}
	h2 := &harness{t: t, nc: nc, js: h.js, store: h.store, reg: cfg.Registerer.(*prometheus.Registry), base: cfg}
	h2.start(cfg)
	return h2
}

func (h *harness) start(cfg dispatcher.Config) {
	t := h.t
	d, err := dispatcher.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.disp = d
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	h.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	t.Cleanup(h.stop)
	waitFor(t, 10*time.Second, "dispatcher ready", func() bool { return d.Ready() == nil })
}

func (h *harness) addWebhook(ws, url string, et events.Type, workflowID string) registry.Webhook {
	h.t.Helper()
	w, err := registry.New(ws, registry.Input{URL: url, EventType: string(et), WorkflowID: workflowID}, time.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.store.Create(context.Background(), w); err != nil {
		h.t.Fatal(err)
	}
	return w
}

// publish sends an event with a JetStream ack, as a careful publisher would.
func (h *harness) publish(subject, body, msgID string) {
	h.t.Helper()
	m := &nats.Msg{Subject: subject, Data: []byte(body), Header: nats.Header{}}
	if msgID != "" {
		m.Header.Set("Nats-Msg-Id", msgID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.js.PublishMsg(ctx, m); err != nil {
		h.t.Fatalf("publish %s: %v", subject, err)
	}
}

// receiver records every request it gets and answers with respond.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	got     []received
	respond func(n int, w http.ResponseWriter) // n counts requests from 1
}

type received struct {
	header http.Header
	body   []byte
	at     time.Time
}

func newReceiver(t *testing.T, respond func(n int, w http.ResponseWriter)) *receiver {
	r := &receiver{respond: respond}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{header: req.Header.Clone(), body: body, at: time.Now()})
		n := len(r.got)
		r.mu.Unlock()
		if r.respond != nil {
			r.respond(n, w)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
