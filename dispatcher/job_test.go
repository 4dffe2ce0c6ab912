package dispatcher

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/webhookd/webhookd/events"
)

func TestJobRoundTrip(t *testing.T) {
	cases := []job{
		{DeliveryID: "msg_0123", WebhookID: "wh_abc", Workspace: "acme", EventID: "evt 1; with spaces", EventType: events.WorkflowRunCompleted,
			Subject: "events.acme.workflowRun.completed", Published: time.Unix(0, 1700000000123456789), Attempt: 1, Body: []byte(`{}`)},
		{DeliveryID: "msg_9", WebhookID: "wh_x", Workspace: "a-b_c", EventID: "seq-42", EventType: events.WorkflowCreditLimitReached,
			Subject: "events.a-b_c.workflowCreditLimit.reached", Published: time.Unix(5, 0), Attempt: 7,
			FirstAttempt: time.Unix(6, 1), LastStatus: 503, LastError: "HTTP 503", Body: []byte(`{"a":1}`)},
	}
	for _, want := range cases {
		got, err := decodeJob(want.header("id"), want.Body)
		if err != nil {
			t.Fatalf("decode %+v: %v", want, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
		}
	}
}

func TestDecodeJobRejects(t *testing.T) {
	good := job{DeliveryID: "msg_1", WebhookID: "wh_1", Workspace: "w", EventID: "e", EventType: events.WorkflowRunStarted,
		Published: time.Unix(1, 0), Attempt: 1}
	bad := []string{"", "2 msg_1 wh_1 w workflowRun.started 1000000000 1 0 0", "1 msg_1 wh_1 w nope 1000000000 1 0 0",
		"1 msg_1 wh_1 w workflowRun.started -5 1 0 0", "1 msg_1 wh_1 w workflowRun.started 1000000000 0 0 0",
		"1 msg_1 wh_1 w workflowRun.started 1000000000 1 0", "1 msg_1 wh_1 w workflowRun.started 1000000000 1 0 0 extra"}
	for _, v := range bad {
		h := good.header("x")
		h[hdrJob] = []string{v}
		if _, err := decodeJob(h, nil); !errors.Is(err, errBadJob) {
			t.Errorf("%q: err = %v", v, err)
		}
	}
}

func FuzzDecodeJob(f *testing.F) {
	j := job{DeliveryID: "msg_1", WebhookID: "wh_1", Workspace: "w", EventID: "e", EventType: events.WorkflowRunStarted,
		Published: time.Unix(1, 0), Attempt: 3, LastStatus: 500}
	f.Add(j.header("x")[hdrJob][0], "e")
	f.Add("1 a b c workflowRun.failed 1 1 1 1", "")
	f.Add("1     ", "x")
	f.Fuzz(func(t *testing.T, jobHdr, eventID string) {
		got, err := decodeJob(nats.Header{hdrJob: {jobHdr}, hdrEvent: {eventID}}, nil)
		if err != nil {
			return
		}
		if got.Attempt < 1 || !got.EventType.Valid() || got.Published.IsZero() {
			t.Fatalf("accepted an invalid job: %+v", got)
		}
		// Whatever decodes must encode back to the same fields.
		again, err := decodeJob(got.header("x"), nil)
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("re-encode mismatch: %+v vs %+v (%v)", again, got, err)
		}
	})
}

// BenchmarkJobRoundTrip is the per-delivery cost of carrying a job through
// the deliveries stream: encoding its headers at fan-out, decoding them at
// delivery.
func BenchmarkJobRoundTrip(b *testing.B) {
	j := job{DeliveryID: "msg_0123456789abcdef0123456789abcdef", WebhookID: "wh_01m8jb8n2g3ftdwegckggf3nng",
		Workspace: "acme", EventID: "evt_01HZX3", EventType: events.WorkflowRunCompleted,
		Subject: "events.acme.workflowRun.completed", Published: time.Unix(0, 1700000000123456789), Attempt: 1,
		Body: []byte(`{"type":"workflowRun.completed"}`)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeJob(j.header(j.DeliveryID), j.Body); err != nil {
			b.Fatal(err)
		}
	}
}
