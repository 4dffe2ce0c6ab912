package api

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry/deliverylog"
)

// recordingResender notes what a retry queued.
type recordingResender struct{ sent []string }

func (r *recordingResender) Resend(_ context.Context, ev events.Event, webhookID, trigger string) error {
	r.sent = append(r.sent, ev.ID+" "+webhookID+" "+trigger)
	return nil
}

// TestDeliveryRoutes: the delivery log's routes with a real log on an
// in-process NATS server, each status and error code.
func TestDeliveryRoutes(t *testing.T) {
	_, js := natstest.Client(t, natstest.JetStream(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := events.EnsureStream(ctx, js, events.StreamConfig{Name: "EV", Subjects: events.Subjects{Prefix: "events"}}); err != nil {
		t.Fatal(err)
	}
	dl, err := deliverylog.New(deliverylog.Config{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- dl.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for dl.Ready() != nil {
		time.Sleep(10 * time.Millisecond)
	}
	res := &recordingResender{}
	dec := events.Decoder{Subjects: events.Subjects{Prefix: "events"}}
	e := newTestEnv(t, func(c *Config) {
		c.Deliveries, c.Resend, c.EventDecoder = dl, res, dec
		c.Finder = events.Finder{JetStream: js, Stream: "EV", Decoder: dec}
	})
	bare := newTestEnv(t) // no delivery log
	hook := e.mustCreate(keyAcme, `{"url":"https://example.com/h","eventType":"workflowRun.completed"}`)["id"].(string)

	// One event in the stream, one not, each with a logged attempt.
	ack, err := js.Publish(ctx, "events.acme.workflowRun.completed", []byte(`{"type":"workflowRun.completed","workflowId":"WF"}`))
	if err != nil {
		t.Fatal(err)
	}
	live := "seq-" + strconv.FormatUint(ack.Sequence, 10)
	now := time.Now().UTC()
	for _, a := range []deliverylog.Attempt{
		{DeliveryID: events.DeliveryID(live, hook), WebhookID: hook, Workspace: wsAcme, EventID: live,
			EventType: "workflowRun.completed", Published: now, Attempt: 1, At: now, Status: 500, ErrorClass: "5xx",
			State: deliverylog.Retrying, NextAttemptAt: now.Add(time.Minute)},
		{DeliveryID: "msg_gone", WebhookID: hook, Workspace: wsAcme, EventID: "gone-event",
			EventType: "workflowRun.completed", Published: now, Attempt: 3, At: now, State: deliverylog.Failed, Reason: "max_attempts"},
	} {
		dl.Record(a)
	}
	fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
	defer fcancel()
	if err := dl.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	base := "/api/webhook/" + hook + "/deliveries"
	liveID := events.DeliveryID(live, hook)
	for _, tc := range []struct {
		name, method, path, key string
		env                     *testEnv
		status                  int
		code                    string
	}{
		{"list", "GET", base, keyAcme, e, 200, ""},
		{"list failed", "GET", base + "?status=failed&since=2020-01-01T00:00:00Z&limit=10", keyAcme, e, 200, ""},
		{"bad status", "GET", base + "?status=lost", keyAcme, e, 400, codeValidationFailed},
		{"bad since", "GET", base + "?since=yesterday", keyAcme, e, 400, codeValidationFailed},
		{"bad limit", "GET", base + "?limit=501", keyAcme, e, 400, codeValidationFailed},
		{"bad cursor", "GET", base + "?cursor=zz!", keyAcme, e, 400, codeInvalidCursor},
		{"no key", "GET", base, "", e, 401, codeUnauthorized},
		{"another workspace", "GET", base, keyOther, e, 404, codeNotFound},
		{"one", "GET", base + "/" + liveID, keyAcme, e, 200, ""},
		{"unknown delivery", "GET", base + "/msg_nope", keyAcme, e, 404, codeNotFound},
		{"retry", "POST", base + "/" + liveID + "/retry", keyAcme, e, 202, ""},
		{"retry an expired event", "POST", base + "/msg_gone/retry", keyAcme, e, 409, codeEventExpired},
		{"event", "GET", "/api/events/" + live, keyAcme, e, 200, ""},
		{"event from the log only", "GET", "/api/events/gone-event", keyAcme, e, 200, ""},
		{"unknown event", "GET", "/api/events/nope", keyAcme, e, 404, codeNotFound},
		{"another workspace's event", "GET", "/api/events/" + live, keyOther, e, 404, codeNotFound},
		{"no log", "GET", "/api/events/" + live, keyAcme, bare, 501, codeDeliveriesUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.env.do(tc.method, tc.path, tc.key, "", nil)
			if tc.code != "" {
				wantError(t, r, tc.status, tc.code)
				return
			}
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.raw)
			}
		})
	}
	list := dataArray(t, e.do("GET", base, keyAcme, "", nil))
	if len(list) != 2 || list[0]["id"] != "msg_gone" || list[1]["state"] != "retrying" {
		t.Errorf("list = %v", list)
	}
	failed := dataArray(t, e.do("GET", base+"?status=failed", keyAcme, "", nil))
	if len(failed) != 1 || failed[0]["reason"] != "max_attempts" {
		t.Errorf("status=failed = %v", failed)
	}
	if len(res.sent) != 1 || res.sent[0] != live+" "+hook+" retry" {
		t.Errorf("resent %v", res.sent)
	}
	ev := dataObject(t, e.do("GET", "/api/events/"+live, keyAcme, "", nil))
	if ev["inStream"] != true || ev["workflowId"] != "WF" || len(ev["deliveries"].([]any)) != 1 {
		t.Errorf("event = %v", ev)
	}
	if r := e.do(http.MethodGet, "/api/events/gone-event", keyAcme, "", nil); dataObject(t, r)["inStream"] != false {
		t.Errorf("an expired event shows as in the stream: %s", r.raw)
	}
}
