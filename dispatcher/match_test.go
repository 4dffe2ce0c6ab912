package dispatcher_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/webhookd/webhookd/events"
)

// TestMatchingMatrix publishes one event per row and checks exactly which
// subscriptions received it, verifying every delivery with the official
// Standard Webhooks library and comparing bodies byte for byte.
func TestMatchingMatrix(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	type sub struct {
		name, ws   string
		et         events.Type
		workflowID string
	}
	subs := []sub{
		{"acme-completed-all", "acme", events.WorkflowRunCompleted, ""},
		{"acme-completed-wf1", "acme", events.WorkflowRunCompleted, "WF-1"},
		{"acme-failed-wf2", "acme", events.WorkflowRunFailed, "WF-2"},
		{"acme-credit", "acme", events.WorkflowCreditLimitReached, ""},
		{"other-completed-all", "other", events.WorkflowRunCompleted, ""},
		{"acme-started-all", "acme", events.WorkflowRunStarted, ""},
	}
	recv := map[string]*receiver{}
	secret := map[string]string{}
	for _, s := range subs {
		r := newReceiver(t, nil)
		recv[s.name] = r
		w := h.addWebhook(s.ws, r.URL+"/hook?token=abc", s.et, s.workflowID)
		secret[s.name] = w.Secret
	}

	rows := []struct {
		subject string
		body    string
		want    []string
	}{
		{"events.acme.workflowRun.completed", `{"type":"workflowRun.completed","workflowId":"WF-1","workflowRunId":"r1","result":{"ok":true}}`,
			[]string{"acme-completed-all", "acme-completed-wf1"}},
		{"events.acme.workflowRun.completed", `{"type":"workflowRun.completed","workflowId":"WF-9","workflowRunId":"r2"}`,
			[]string{"acme-completed-all"}},
		{"events.acme.workflowRun.failed", `{"type":"workflowRun.failed","workflowId":"WF-1"}`, nil},
		{"events.acme.workflowRun.failed", `{"type":"workflowRun.failed","workflowId":"WF-2", "metadata": {"a": [1, 2]}}`,
			[]string{"acme-failed-wf2"}},
		{"events.acme.workflowCreditLimit.reached", `{"type":"workflowCreditLimit.reached","metadata":{"credits":0}}`,
			[]string{"acme-credit"}},
		{"events.other.workflowRun.completed", "{\"type\":\"workflowRun.completed\",\n \"workflowId\":\"WF-1\"}",
			[]string{"other-completed-all"}},
		{"events.nobody.workflowRun.completed", `{"type":"workflowRun.completed","workflowId":"WF-1"}`, nil},
		{"events.acme.workflowRun.started", `{"type":"workflowRun.started","workflowId":null}`, []string{"acme-started-all"}},
	}
	want := map[string][]string{} // receiver -> bodies, in order
	for i, row := range rows {
		h.publish(row.subject, row.body, fmt.Sprintf("evt-%d", i))
		for _, name := range row.want {
			want[name] = append(want[name], row.body)
		}
	}
	total := 0
	for _, w := range want {
		total += len(w)
	}
	waitFor(t, 15*time.Second, "all deliveries", func() bool {
		n := 0
		for _, r := range recv {
			n += r.count()
		}
		return n >= total
	})
	time.Sleep(300 * time.Millisecond) // room for a wrong extra delivery to show up

	for _, s := range subs {
		got := recv[s.name].requests()
		if len(got) != len(want[s.name]) {
			t.Errorf("%s: got %d deliveries, want %d", s.name, len(got), len(want[s.name]))
			continue
		}
		wh, err := standardwebhooks.NewWebhook(secret[s.name])
		if err != nil {
			t.Fatal(err)
		}
		bodies := map[string]bool{}
		for _, g := range got {
			bodies[string(g.body)] = true
			if err := wh.Verify(g.body, g.header); err != nil {
				t.Errorf("%s: official library rejects signature: %v", s.name, err)
			}
			if ct := g.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: Content-Type %q", s.name, ct)
			}
			if ua := g.header.Get("User-Agent"); ua != "webhookd" {
				t.Errorf("%s: User-Agent %q", s.name, ua)
			}
			if ts := g.header.Get("webhook-timestamp"); ts == "" {
				t.Errorf("%s: no webhook-timestamp", s.name)
			}
		}
		for _, b := range want[s.name] {
			if !bodies[b] {
				t.Errorf("%s: body %q not received byte for byte", s.name, b)
			}
		}
	}
}

// TestWebhookIDStableAcrossRepublish: the same event (same Nats-Msg-Id)
// published again after the dedupe window would be delivered again; within
// it, it is stored once. Either way the delivery id is a function of event
// and subscription only.
func TestDuplicatePublishDeliveredOnce(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r := newReceiver(t, nil)
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	body := `{"type":"workflowRun.completed","workflowId":"W"}`
	h.publish("events.acme.workflowRun.completed", body, "same-id")
	h.publish("events.acme.workflowRun.completed", body, "same-id")
	h.publish("events.acme.workflowRun.completed", body, "other-id")
	waitFor(t, 10*time.Second, "two deliveries", func() bool { return r.count() >= 2 })
	time.Sleep(500 * time.Millisecond)
	got := r.requests()
	if len(got) != 2 {
		t.Fatalf("got %d deliveries, want 2 (dedupe by Nats-Msg-Id)", len(got))
	}
	if got[0].header.Get("webhook-id") == got[1].header.Get("webhook-id") {
		t.Error("distinct events share a webhook-id")
	}
	for _, g := range got {
		if !bytes.Equal(g.body, []byte(body)) {
			t.Errorf("body %q", g.body)
		}
	}
}
