package api

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry/replay"
)

// nothingFailed is a replay.FailedSource with no failed delivery.
type nothingFailed struct{}

func (nothingFailed) FailedEventIDs(context.Context, string, string) (map[string]bool, error) {
	return map[string]bool{}, nil
}

// enqueued counts what replays queue.
type enqueued struct{ n chan string }

func (e enqueued) Replay(_ context.Context, d replay.Delivery) error {
	e.n <- d.Event.ID
	return nil
}

// TestReplayRoutes: the replay routes over a real replay.Manager on an
// in-process NATS server, each status and error code.
func TestReplayRoutes(t *testing.T) {
	_, js := natstest.Client(t, natstest.JetStream(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subj := events.Subjects{Prefix: "events"}
	if _, err := events.EnsureStream(ctx, js, events.StreamConfig{Name: "EV", Subjects: subj}); err != nil {
		t.Fatal(err)
	}
	var e *testEnv
	q := enqueued{n: make(chan string, 100)}
	var mgr *replay.Manager
	e = newTestEnv(t, func(c *Config) {
		var err error
		mgr, err = replay.New(replay.Config{JetStream: js, EventStream: "EV", Decoder: events.Decoder{Subjects: subj},
			Webhooks: c.Store.Index(), Enqueuer: q, Failed: nothingFailed{}, MaxPerWorkspace: 1})
		if err != nil {
			t.Fatal(err)
		}
		c.Replays = mgr
	})
	done := make(chan error, 1)
	go func() { done <- mgr.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for mgr.Ready() != nil {
		time.Sleep(10 * time.Millisecond)
	}
	bare := newTestEnv(t)
	hook := e.mustCreate(keyAcme, `{"url":"https://example.com/h","eventType":"workflowRun.completed"}`)["id"].(string)
	since := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	if _, err := js.Publish(ctx, "events.acme.workflowRun.completed", []byte(`{"type":"workflowRun.completed"}`)); err != nil {
		t.Fatal(err)
	}
	path := "/api/webhook/" + hook + "/replay"
	post := func(env *testEnv, key, body string) response {
		return env.do(http.MethodPost, path, key, "application/json", strings.NewReader(body))
	}
	for _, tc := range []struct {
		name, key, body string
		env             *testEnv
		status          int
		code            string
	}{
		{"no since", keyAcme, `{}`, e, 422, codeValidationFailed},
		{"bad since", keyAcme, `{"since":"yesterday"}`, e, 422, codeValidationFailed},
		{"bad status", keyAcme, `{"since":"` + since + `","status":"some"}`, e, 422, codeValidationFailed},
		{"since after until", keyAcme, `{"since":"` + since + `","until":"2020-01-01T00:00:00Z"}`, e, 422, codeValidationFailed},
		{"unknown field", keyAcme, `{"since":"` + since + `","from":"x"}`, e, 400, codeUnknownField},
		{"not JSON", keyAcme, `{`, e, 400, codeInvalidJSON},
		{"another workspace", keyOther, `{"since":"` + since + `"}`, e, 404, codeNotFound},
		{"no replays here", keyAcme, `{"since":"` + since + `"}`, bare, 501, codeReplayUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, post(tc.env, tc.key, tc.body), tc.status, tc.code)
		})
	}
	r := post(e, keyAcme, `{"since":"`+since+`"}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("start: %d %s", r.status, r.raw)
	}
	id := dataObject(t, r)["id"].(string)
	select {
	case <-q.n:
	case <-time.After(10 * time.Second):
		t.Fatal("the replay queued nothing")
	}
	var job map[string]any
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if job = dataObject(t, e.do(http.MethodGet, "/api/replays/"+url.PathEscape(id), keyAcme, "", nil)); job["state"] == "succeeded" {
			break
		}
	}
	if job["state"] != "succeeded" || job["enqueued"] != 1.0 {
		t.Errorf("job = %v", job)
	}
	wantError(t, e.do(http.MethodGet, "/api/replays/"+id, keyOther, "", nil), 404, codeNotFound)
	wantError(t, e.do(http.MethodGet, "/api/replays/rp_nope", keyAcme, "", nil), 404, codeNotFound)
	// One unfinished replay per workspace here: a second waits its turn.
	far := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	slow := post(e, keyAcme, `{"since":"`+far+`"}`)
	if slow.status != http.StatusAccepted {
		t.Fatalf("second start: %d %s", slow.status, slow.raw)
	}
	if r := post(e, keyAcme, `{"since":"`+far+`"}`); r.status == http.StatusAccepted {
		// The second may have finished already (one event); then a
		// third is accepted too, which is right.
		t.Logf("third replay accepted: the second had finished")
	} else {
		wantError(t, r, http.StatusTooManyRequests, codeRateLimited)
	}
	canceled := e.do(http.MethodDelete, "/api/replays/"+dataObject(t, slow)["id"].(string), keyAcme, "", nil)
	if canceled.status != http.StatusOK {
		t.Errorf("cancel: %d %s", canceled.status, canceled.raw)
	}
}

// FuzzDecodeReplay: no body makes decodeReplay panic, errors are client
// errors, and an accepted request has a window.
func FuzzDecodeReplay(f *testing.F) {
	for _, s := range []string{`{"since":"2026-12-01T10:00:00Z"}`, `{"since":"2026-12-01T10:00:00Z","until":"2026-12-01T11:00:00Z","status":"failed"}`,
		`{}`, `{"since":1}`, `{"since":null}`, `{"status":"all"}`, `[]`, `null`, `{"since":"x","until":"y","status":3}`} {
		f.Add([]byte(s))
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeReplay(body, now)
		if err != nil {
			if _, unexpected := toAPIError(err); unexpected {
				t.Fatalf("decodeReplay error is not a client error: %v", err)
			}
			return
		}
		if req.Until.IsZero() || (req.Status != "" && req.Status != replay.StatusAll && req.Status != replay.StatusFailed) {
			t.Fatalf("accepted %+v", req)
		}
	})
}

// FuzzDeliveryQuery: the deliveries list's query string never panics the
// parser, and what it accepts is in bounds.
func FuzzDeliveryQuery(f *testing.F) {
	for _, s := range []string{"", "status=failed", "since=2026-12-01T10:00:00Z&limit=20", "limit=0", "limit=501", "status=x&since=y", "cursor=abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r, err := http.NewRequest(http.MethodGet, "/x?"+raw, nil)
		if err != nil {
			return
		}
		q, err := deliveryQuery(r)
		if err != nil {
			if _, unexpected := toAPIError(err); unexpected {
				t.Fatalf("deliveryQuery error is not a client error: %v", err)
			}
			return
		}
		if q.Limit < 1 || q.Limit > maxDeliveryLimit {
			t.Fatalf("accepted limit %d", q.Limit)
		}
	})
}
