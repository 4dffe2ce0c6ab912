package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// patchReceiver records, per event, the webhook-id and body it first saw,
// and when every request arrived. fail makes it answer 500 to everything;
// otherwise it verifies the signature and answers 200 (400 when it fails).
type patchReceiver struct {
	fail     bool
	verifier *standardwebhooks.Webhook

	mu       sync.Mutex
	seen     map[string]delivery // event -> first delivery
	arrivals []time.Time         // start of every request
	lastNew  time.Time           // when the last distinct event first arrived
	total    int
	badSig   int
	mismatch int // a repeat of an event with another webhook-id or body
}

func newPatchReceiver(fail bool) *patchReceiver {
	return &patchReceiver{fail: fail, seen: map[string]delivery{}}
}

func (p *patchReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	body, _ := io.ReadAll(r.Body)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total++
	p.arrivals = append(p.arrivals, now)
	if !p.fail && (p.verifier == nil || p.verifier.Verify(body, r.Header) != nil) {
		p.badSig++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	ev := eventKey(body)
	d := delivery{id: r.Header.Get("webhook-id"), body: string(body)}
	if prev, ok := p.seen[ev]; ok {
		if prev != d {
			p.mismatch++
		}
	} else {
		p.seen[ev] = d
		p.lastNew = now
	}
	if p.fail {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (p *patchReceiver) unique() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.seen)
}

// webhookJSON decodes an API answer and returns its data object as raw
// members, so that the test can tell an absent secret from an empty one.
func webhookJSON(t *testing.T, status int, body []byte) map[string]json.RawMessage {
	t.Helper()
	var env struct{ Data map[string]json.RawMessage }
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("answer %d %s: %v", status, body, err)
	}
	return env.Data
}

func stringMember(t *testing.T, m map[string]json.RawMessage, name string) string {
	t.Helper()
	var s string
	if raw, ok := m[name]; ok {
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("member %s = %s: %v", name, raw, err)
		}
	}
	return s
}

// TestPatchMovesPendingRetriesToTheNewURL: deliveries failing at one URL
// and waiting for their retries follow a PATCH of the webhook's URL: every
// one arrives at the new URL with the webhook-id the old one saw and a
// signature by the unchanged secret, and the old URL hears nothing more.
func TestPatchMovesPendingRetriesToTheNewURL(t *testing.T) {
	if testing.Short() {
		t.Skip("real daemon")
	}
	const events = 20
	d := newDaemon(t, "--retry-initial", "500ms", "--retry-max-interval", "1s",
		"--circuit-failures", "100000", "--circuit-timeouts", "100000")
	d.start()

	oldR, newR := newPatchReceiver(true), newPatchReceiver(false)
	oldSrv := httptest.NewServer(oldR)
	defer oldSrv.Close()
	newSrv := httptest.NewServer(newR)
	defer newSrv.Close()
	oldURL, newURL := oldSrv.URL+"/old", newSrv.URL+"/new"

	id, secret := d.register(oldURL, "workflowRun.completed", "")
	v, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	newR.mu.Lock()
	newR.verifier = v
	newR.mu.Unlock()

	start := time.Now()
	publishEvents(t, d.natsURL(), events)
	waitUntil(t, 15*time.Second, "OLD to see an attempt of every event", func() bool { return oldR.unique() >= events })
	oldR.mu.Lock()
	oldBefore := oldR.total
	oldR.mu.Unlock()

	body, _ := json.Marshal(map[string]string{"url": newURL})
	patchedAt := time.Now()
	status, out := d.api(http.MethodPatch, "/api/webhook/"+id, body)
	if status != http.StatusOK {
		t.Fatalf("PATCH: %d %s", status, out)
	}
	patched := webhookJSON(t, status, out)
	if got := stringMember(t, patched, "url"); got != newURL {
		t.Errorf("PATCH answer url = %q, want %q", got, newURL)
	}
	if _, ok := patched["secret"]; ok {
		t.Errorf("PATCH answer carries a secret: %s", out)
	}

	waitUntil(t, 15*time.Second, "NEW to receive every event", func() bool { return newR.unique() >= events })
	moved := time.Since(patchedAt)
	// Longer than the longest retry interval: a retry still aimed at OLD
	// would have come by now.
	time.Sleep(2500 * time.Millisecond)

	oldR.mu.Lock()
	newR.mu.Lock()
	lastNew := newR.lastNew
	var oldAfterPatch, oldAfterLast int
	for _, at := range oldR.arrivals {
		if at.After(patchedAt) {
			oldAfterPatch++
		}
		if at.After(lastNew) {
			oldAfterLast++
		}
	}
	if oldAfterLast != 0 {
		t.Errorf("OLD got %d requests after NEW had received every event", oldAfterLast)
	}
	if len(newR.seen) != events {
		t.Errorf("NEW saw %d distinct events, want %d", len(newR.seen), events)
	}
	for ev, nd := range newR.seen {
		od, ok := oldR.seen[ev]
		switch {
		case !ok:
			t.Errorf("NEW got %s, which OLD never saw", ev)
		case od.id != nd.id:
			t.Errorf("%s: webhook-id %q at OLD, %q at NEW", ev, od.id, nd.id)
		case od.body != nd.body:
			t.Errorf("%s: body changed with the URL: %q -> %q", ev, od.body, nd.body)
		}
	}
	if newR.badSig != 0 {
		t.Errorf("%d of NEW's %d deliveries failed verification with the secret given at create", newR.badSig, newR.total)
	}
	if oldR.mismatch != 0 || newR.mismatch != 0 {
		t.Errorf("repeats with another webhook-id or body: OLD %d, NEW %d", oldR.mismatch, newR.mismatch)
	}
	t.Logf("%d events: OLD %d requests (%d before PATCH, %d after, %d after NEW's last); NEW %d requests, all %d events %s after PATCH; total %s",
		events, oldR.total, oldBefore, oldAfterPatch, oldAfterLast, newR.total, len(newR.seen),
		moved.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	newR.mu.Unlock()
	oldR.mu.Unlock()

	status, out = d.api(http.MethodGet, "/api/webhook/"+id, nil)
	if status != http.StatusOK {
		t.Fatalf("GET: %d %s", status, out)
	}
	got := webhookJSON(t, status, out)
	if u := stringMember(t, got, "url"); u != newURL {
		t.Errorf("GET url = %q, want %q", u, newURL)
	}
	if _, ok := got["secret"]; ok {
		t.Errorf("GET carries a secret: %s", out)
	}
	status, out = d.api(http.MethodGet, "/api/webhook/"+id+"/secret", nil)
	if status != http.StatusOK {
		t.Fatalf("GET secret: %d %s", status, out)
	}
	if s := stringMember(t, webhookJSON(t, status, out), "secret"); s != secret {
		t.Errorf("secret after PATCH = %q, want the one given at create", s)
	}
}
