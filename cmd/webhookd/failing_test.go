package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// deadHost is a destination that accepts TCP connections and never
// answers, until revive: then it closes the connections it holds and
// serves HTTP with handler on the same port.
type deadHost struct {
	ln      net.Listener
	mu      sync.Mutex
	held    map[net.Conn]struct{}
	alive   chan net.Conn // accepted connections once revived
	revived atomic.Bool
	srv     *http.Server
}

func newDeadHost(t *testing.T, handler http.Handler) *deadHost {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &deadHost{ln: ln, held: map[net.Conn]struct{}{}, alive: make(chan net.Conn, 64)}
	h.srv = &http.Server{Handler: handler}
	go h.accept()
	go func() { _ = h.srv.Serve(chanListener{h}) }()
	t.Cleanup(func() { ln.Close(); h.srv.Close(); h.closeHeld() })
	return h
}

func (h *deadHost) accept() {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			close(h.alive)
			return
		}
		if h.revived.Load() {
			h.alive <- c
			continue
		}
		h.mu.Lock()
		h.held[c] = struct{}{}
		h.mu.Unlock()
		go func() {
			_, _ = io.Copy(io.Discard, c) // until the client gives up
			h.mu.Lock()
			delete(h.held, c)
			h.mu.Unlock()
			c.Close()
		}()
	}
}

func (h *deadHost) open() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.held)
}

func (h *deadHost) closeHeld() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.held {
		c.Close()
	}
}

func (h *deadHost) revive() {
	h.revived.Store(true)
	h.closeHeld()
}

func (h *deadHost) url() string { return "http://" + h.ln.Addr().String() }

// chanListener hands the revived host's connections to its http.Server.
type chanListener struct{ h *deadHost }

func (l chanListener) Accept() (net.Conn, error) {
	c, ok := <-l.h.alive
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l chanListener) Close() error   { return nil }
func (l chanListener) Addr() net.Addr { return l.h.ln.Addr() }

type healthView struct {
	Enabled        bool
	DisabledReason string
	DisabledAt     string
	Health         struct {
		State               string
		ConsecutiveFailures int
		LastErrorClass      string
		LastStatus          int
		LastSuccessAt       string
	}
}

func (d *daemon) webhook(id string) healthView {
	d.t.Helper()
	status, body := d.api(http.MethodGet, "/api/webhook/"+id, nil)
	if status != 200 {
		d.t.Fatalf("get %s: %d %s", id, status, body)
	}
	var env struct{ Data healthView }
	if err := json.Unmarshal(body, &env); err != nil {
		d.t.Fatal(err)
	}
	return env.Data
}

// TestDeadHostsAreParkedAndGetEverythingBack: many hanging hosts and a
// healthy one, every event to all. The healthy one gets everything; the
// hanging hosts' circuits open, after which they see at most one probe
// connection each; once they come back, every event they missed arrives,
// each with its stable webhook-id and a valid signature.
func TestDeadHostsAreParkedAndGetEverythingBack(t *testing.T) {
	if testing.Short() {
		t.Skip("fault suite")
	}
	d := newDaemon(t, "--delivery-timeout", "2s", "--circuit-cooldown", "1s", "--circuit-max-cooldown", "2s")
	d.start()
	const dead, events = 40, 300
	l := newLedger()
	healthy := httptest.NewServer(http.HandlerFunc(l.handler))
	defer healthy.Close()
	subscribe(t, d, l, healthy.URL, 1)
	hosts := make([]*deadHost, dead)
	ids := make([]string, dead)
	for i := range hosts {
		hosts[i] = newDeadHost(t, http.HandlerFunc(l.handler))
		ids[i] = subscribeAt(t, d, l, hosts[i].url(), fmt.Sprintf("/dead-%d", i))
	}
	publishEvents(t, d.natsURL(), events)
	waitUntil(t, 60*time.Second, "healthy receiver gets every event", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.seen["/sub-0"]) == events
	})
	waitUntil(t, 60*time.Second, "every dead host's circuit open", func() bool {
		return metricValue(t, d, "webhookd_circuits_open") >= dead
	})
	if h := d.webhook(ids[0]).Health; h.State != "circuit_open" || h.LastErrorClass != "timeout" || h.ConsecutiveFailures < 2 {
		t.Errorf("a dead host's health = %+v, want circuit_open after timeouts", h)
	}
	// Only probes now: sample the open connections for a few seconds.
	var peak int
	for range 20 {
		n := 0
		for _, h := range hosts {
			n += h.open()
		}
		peak = max(peak, n)
		time.Sleep(150 * time.Millisecond)
	}
	t.Logf("%d dead hosts, circuits open: at most %d connections open to them at once", dead, peak)
	if peak > dead {
		t.Errorf("%d connections to %d dead hosts with their circuits open; want at most one probe each", peak, dead)
	}

	start := time.Now()
	for _, h := range hosts {
		h.revive()
	}
	waitUntil(t, 90*time.Second, "revived hosts get every event they missed", func() bool {
		return l.unique() == events*(dead+1)
	})
	t.Logf("%d revived hosts got all %d events each %s after coming back", dead, events, time.Since(start).Round(100*time.Millisecond))
	l.check(t)
	waitUntil(t, 10*time.Second, "health back to healthy", func() bool {
		return d.webhook(ids[0]).Health.State == "healthy"
	})
}

// TestAutoDisable: a webhook is disabled by a 410 (with --disable-on-gone)
// or by failing without a success for --disable-after; either way an
// operational event arrives on NATS, new events stop, and enabling it
// resumes deliveries.
func TestAutoDisable(t *testing.T) {
	if testing.Short() {
		t.Skip("real daemon")
	}
	tests := []struct {
		name   string
		flags  []string
		status int
		reason string
	}{
		{"gone", nil, http.StatusGone, "gone"},
		{"failing too long", []string{"--disable-after", "2s", "--retry-initial", "200ms", "--circuit-failures", "1000"},
			http.StatusInternalServerError, "failing"},
		// The usual case: the circuit opens long before --disable-after,
		// and only its probes keep failing.
		{"failing too long behind an open circuit", []string{"--disable-after", "3s", "--retry-initial", "200ms",
			"--circuit-failures", "2", "--circuit-cooldown", "300ms", "--circuit-max-cooldown", "600ms"},
			http.StatusInternalServerError, "failing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDaemon(t, tt.flags...)
			d.start()
			var broken atomic.Bool
			broken.Store(true)
			var got atomic.Int64
			recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if broken.Load() {
					w.WriteHeader(tt.status)
					return
				}
				got.Add(1)
				w.WriteHeader(http.StatusNoContent)
			}))
			defer recv.Close()
			id, _ := d.register(recv.URL, "workflowRun.completed", "")
			nc, err := nats.Connect(d.natsURL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			ops := make(chan *nats.Msg, 4)
			sub, err := nc.ChanSubscribe("events.acme.webhook.disabled", ops)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			publishEventsFrom(t, d.natsURL(), 0, 3)

			var ev struct{ Type, WebhookID, Workspace, Reason string }
			select {
			case m := <-ops:
				if err := json.Unmarshal(m.Data, &ev); err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no webhook.disabled event on NATS")
			}
			if ev.Type != "webhook.disabled" || ev.WebhookID != id || ev.Workspace != "acme" || ev.Reason != tt.reason {
				t.Errorf("operational event = %+v", ev)
			}
			if v := d.webhook(id); v.Enabled || v.DisabledReason != tt.reason || v.DisabledAt == "" {
				t.Errorf("after disable: %+v", v)
			}
			// Every event's delivery ends recorded as failed, whether it was
			// given up on its own (410) or pending when the webhook was
			// disabled, so it can be inspected and retried later.
			waitUntil(t, 20*time.Second, "the 3 deliveries recorded as failed", func() bool { return len(d.failures(id)) == 3 })
			for _, f := range d.failures(id) {
				if f.Reason != "disabled" && f.Reason != tt.reason {
					t.Errorf("failure record reason %q, want disabled or %s", f.Reason, tt.reason)
				}
			}
			waitUntil(t, 10*time.Second, "disabled gauge", func() bool { return metricValue(t, d, "webhookd_webhooks_disabled") == 1 })

			broken.Store(false)
			publishEventsFrom(t, d.natsURL(), 3, 2)
			time.Sleep(time.Second)
			if n := got.Load(); n != 0 {
				t.Errorf("a disabled webhook received %d events", n)
			}
			status, body := d.api(http.MethodPost, "/api/webhook/"+id+"/enable", nil)
			if status != 200 {
				t.Fatalf("enable: %d %s", status, body)
			}
			if v := d.webhook(id); !v.Enabled || v.Health.State != "healthy" {
				t.Errorf("after enable: %+v", v)
			}
			publishEventsFrom(t, d.natsURL(), 5, 1)
			waitUntil(t, 20*time.Second, "delivery after enable", func() bool { return got.Load() >= 1 })
		})
	}
}

// TestTwoInstancesHonourOneCircuit: a circuit opened through one
// instance's attempts is open on the other, whose API shows it too.
func TestTwoInstancesHonourOneCircuit(t *testing.T) {
	if testing.Short() {
		t.Skip("two real daemons")
	}
	natsPort := freePort(t)
	startNATSProcess(t, natsPort, t.TempDir())
	url := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	flags := []string{"--circuit-failures", "3", "--circuit-cooldown", "1m", "--circuit-max-cooldown", "1m"}
	a, b := newDaemon(t, flags...), newDaemon(t, flags...)
	a.externalNATS, b.externalNATS = url, url
	a.start()
	b.start()
	var hits atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer recv.Close()
	id, _ := a.register(recv.URL, "workflowRun.completed", "")
	publishEventsFrom(t, url, 0, 50)
	waitUntil(t, 30*time.Second, "circuit open on both instances", func() bool {
		return metricValue(t, a, "webhookd_circuits_open") == 1 && metricValue(t, b, "webhookd_circuits_open") == 1
	})
	// The circuit is shared within seconds: both APIs show it open, however
	// the two instances' records of their last failures interleaved.
	opened := time.Now()
	waitUntil(t, 5*time.Second, "circuit_open through both APIs", func() bool {
		return a.webhook(id).Health.State == "circuit_open" && b.webhook(id).Health.State == "circuit_open"
	})
	t.Logf("both APIs showed circuit_open %s after both breakers had opened", time.Since(opened).Round(time.Millisecond))
	for name, d := range map[string]*daemon{"a": a, "b": b} {
		if h := d.webhook(id).Health; h.State != "circuit_open" || h.LastStatus != 503 {
			t.Errorf("health through %s = %+v, want circuit_open after 503s", name, h)
		}
	}
	seen := hits.Load()
	time.Sleep(2 * time.Second)
	if n := hits.Load(); n != seen {
		t.Errorf("attempts went on with the circuit open on both instances: %d -> %d", seen, n)
	}
	t.Logf("circuit opened after %d attempts across two instances; 50 events parked", seen)
}
