package dispatcher_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/webhookd/webhookd/dispatcher"
	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/api"
	"github.com/webhookd/webhookd/registry/ssrf"
)

// ownStore is a harness whose dispatcher reads a store that, unlike the
// harness's own, accepts loopback URLs in updates (rotations re-check the
// stored webhook with the Validator), as httptest receivers need.
func ownStore(t *testing.T, guard *ssrf.Guard) (*harness, *registry.Store) {
	t.Helper()
	store, err := registry.Open(registry.Config{Path: filepath.Join(t.TempDir(), "own.db"),
		Validator: registry.Validator{Guard: &ssrf.Guard{AllowPrivate: true}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h := newHarness(t, harnessOpts{guard: guard, cfg: func(c *dispatcher.Config) {
		c.Subscriptions, c.Failures = store.Index(), store
	}})
	return h, store
}

func createIn(t *testing.T, s *registry.Store, url string) registry.Webhook {
	t.Helper()
	w, err := registry.New("acme", registry.Input{URL: url, EventType: string(events.WorkflowRunCompleted)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	return w
}

// verifies reports whether the official library accepts the delivery
// under secret.
func verifies(t *testing.T, secret string, r received) bool {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	return wh.Verify(r.body, r.header) == nil
}

// TestRotationSignsWithBothSecretsDuringGrace, through the whole
// pipeline: during the grace period a delivery verifies (official
// library) with the new secret and with the old one; once it has passed,
// with the same cached target, only with the new one.
func TestRotationSignsWithBothSecretsDuringGrace(t *testing.T) {
	h, store := ownStore(t, nil)
	recv := newReceiver(t, nil)
	w := createIn(t, store, recv.URL+"/hook")
	const grace = 2 * time.Second
	rot, err := store.RotateSecret(context.Background(), "acme", w.ID, grace, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	stranger := createIn(t, store, recv.URL+"/other") // another webhook's secret must not verify

	h.publish("events.acme.workflowRun.completed", `{"type":"workflowRun.completed","workflowId":"WF-1"}`, "evt-rot-1")
	waitFor(t, 10*time.Second, "the delivery in grace", func() bool { return recv.count() >= 2 })
	// After the grace period: the registry's *Webhook is the same, so
	// the dispatcher signs with its cached target.
	time.Sleep(time.Until(rot.PreviousSecretUntil) + 50*time.Millisecond)
	h.publish("events.acme.workflowRun.completed", `{"type":"workflowRun.completed","workflowId":"WF-2"}`, "evt-rot-2")
	waitFor(t, 10*time.Second, "the delivery after grace", func() bool { return recv.count() >= 4 })

	var mine []received
	for _, r := range recv.requests() {
		if strings.Contains(string(r.body), `"WF-`) && verifies(t, rot.Secret, r) {
			mine = append(mine, r)
		} else if !verifies(t, stranger.Secret, r) {
			t.Fatalf("a delivery verifies with neither webhook's secret: %s", r.header)
		}
	}
	if len(mine) != 2 {
		t.Fatalf("%d deliveries verify with the new secret, want 2", len(mine))
	}
	cases := []struct {
		name    string
		r       received
		sigs    int
		withOld bool
	}{
		{"in grace", mine[0], 2, true},
		{"after grace", mine[1], 1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if n := len(strings.Fields(tc.r.header.Get("webhook-signature"))); n != tc.sigs {
				t.Errorf("webhook-signature %q has %d signatures, want %d", tc.r.header.Get("webhook-signature"), n, tc.sigs)
			}
			if got := verifies(t, w.Secret, tc.r); got != tc.withOld {
				t.Errorf("verifies with the old secret: %v, want %v", got, tc.withOld)
			}
			if verifies(t, stranger.Secret, tc.r) {
				t.Error("verifies with an unrelated secret")
			}
		})
	}
}

// TestSendTest: the dispatcher's test delivery, through the management
// API as it is served: signed (both secrets after a rotation), sent to
// disabled webhooks too, guarded by the SSRF guard, and never recorded
// nor counted in the webhook's health.
func TestSendTest(t *testing.T) {
	cases := []struct {
		name      string
		guard     *ssrf.Guard // nil: private targets allowed
		respond   int
		rotate    bool
		disable   bool
		delivered bool
		status    float64
		errPrefix string
		received  bool
		body      string // the receiver's answer, shown back as response
	}{
		{name: "delivered", respond: 204, delivered: true, status: 204, received: true},
		{name: "disabled webhook, after a rotation", respond: 200, rotate: true, disable: true, delivered: true, status: 200, received: true},
		{name: "endpoint fails", respond: 503, status: 503, errPrefix: "5xx: HTTP 503", received: true, body: "down for maintenance"},
		{name: "SSRF guard refuses", guard: &ssrf.Guard{}, respond: 204, errPrefix: "blocked: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, store := ownStore(t, tc.guard)
			recv := newReceiver(t, func(_ int, w http.ResponseWriter) {
				w.WriteHeader(tc.respond)
				_, _ = io.WriteString(w, tc.body)
			})
			w := createIn(t, store, recv.URL+"/hook?token=abc")
			ctx := context.Background()
			oldSecret := w.Secret
			if tc.rotate {
				rot, err := store.RotateSecret(ctx, "acme", w.ID, time.Hour, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				w.Secret = rot.Secret
			}
			if tc.disable {
				if _, _, err := store.Disable(ctx, w.ID, registry.DisabledManual, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			srv, err := api.New(api.Config{Store: store, Tester: h.disp,
				Keys: registry.NewKeyRing([]registry.APIKey{{Workspace: "acme", Key: "key-acme-0123456789"}}, nil)})
			if err != nil {
				t.Fatal(err)
			}
			hs := httptest.NewServer(srv.Handler())
			t.Cleanup(hs.Close)
			req, _ := http.NewRequest(http.MethodPost, hs.URL+"/api/webhook/"+w.ID+"/test", nil)
			req.Header.Set("x-copy-ai-api-key", "key-acme-0123456789")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var env struct {
				Data map[string]any `json:"data"`
			}
			if err := json.Unmarshal(raw, &env); err != nil || resp.StatusCode != 200 {
				t.Fatalf("POST …/test: %d %s", resp.StatusCode, raw)
			}
			d := env.Data
			if d["delivered"] != tc.delivered || d["status"] != tc.status || !strings.HasPrefix(d["error"].(string), tc.errPrefix) ||
				(tc.errPrefix == "" && d["error"] != "") {
				t.Fatalf("answer %s", raw)
			}
			if got, _ := d["response"].(string); got != tc.body {
				t.Fatalf("response = %q, want %q", got, tc.body)
			}
			if strings.Contains(string(raw), "token=abc") {
				t.Fatalf("the answer shows the URL: %s", raw)
			}
			got := recv.requests()
			if !tc.received {
				if len(got) != 0 {
					t.Fatalf("the guard let %d requests through", len(got))
				}
			} else {
				if len(got) != 1 {
					t.Fatalf("the receiver got %d requests, want 1", len(got))
				}
				r := got[0]
				if r.header.Get("webhook-id") != d["webhookId"] || !strings.HasPrefix(d["webhookId"].(string), "msg_") {
					t.Errorf("webhook-id %q, answer names %v", r.header.Get("webhook-id"), d["webhookId"])
				}
				if !verifies(t, w.Secret, r) {
					t.Error("the official library rejects the test's signature")
				}
				if got := verifies(t, oldSecret, r); got != true {
					t.Errorf("verifies with the secret before the rotation: %v", got)
				}
				var body map[string]any
				if err := json.Unmarshal(r.body, &body); err != nil {
					t.Fatal(err)
				}
				ts, _ := body["timestamp"].(string)
				if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || body["type"] != "webhook.test" ||
					body["webhookId"] != w.ID || len(body) != 3 {
					t.Errorf("test event body %s", r.body)
				}
			}
			// A debugging aid: no failure record, no health change.
			if fs, err := store.Failures(ctx, "acme", w.ID, 10); err != nil || len(fs) != 0 {
				t.Errorf("failures recorded: %v, %v", fs, err)
			}
			if rec := h.disp.Health(w.ID); rec.ConsecutiveFailures != 0 || !rec.LastFailureAt.IsZero() || !rec.LastSuccessAt.IsZero() {
				t.Errorf("health changed: %+v", rec)
			}
		})
	}
}
