package deliverylog

import (
	"encoding/json"
	"testing"
	"time"
)

func TestAppendAttemptMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	for _, a := range []Attempt{
		{},
		{DeliveryID: "msg_1", WebhookID: "wh_1", Workspace: "ws", EventID: "run-1", EventType: "workflowRun.completed",
			Published: at, Attempt: 2, At: at.Add(time.Second), Duration: 1234567, Status: 500, ErrorClass: "5xx",
			Error: "HTTP 500", Response: "<script>\"x\"\\\n\t\r\x01é\u2028\xff&</script>", State: Retrying,
			NextAttemptAt: at.Add(time.Minute), Reason: "max_age", Trigger: "replay:rp_1"},
		{DeliveryID: "d", At: at.In(time.FixedZone("x", 3600)), State: Succeeded},
	} {
		want, err := json.Marshal(&a)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendAttempt(nil, &a); string(got) != string(want) {
			t.Errorf("appendAttempt =\n%s\nencoding/json =\n%s", got, want)
		}
	}
}

func FuzzAppendAttempt(f *testing.F) {
	f.Add("msg_1", "HTTP 500", "<b>ok</b>", "\xff\x00\u2029", int64(1), 200)
	f.Fuzz(func(t *testing.T, id, errText, resp, other string, dur int64, status int) {
		a := Attempt{DeliveryID: id, WebhookID: other, Workspace: other, EventID: id, EventType: other,
			Published: time.Unix(0, dur).UTC(), Attempt: status, At: time.Unix(dur, 0).UTC(), Duration: time.Duration(dur),
			Status: status, ErrorClass: other, Error: errText, Response: resp, State: State(other), Reason: other, Trigger: other}
		want, err := json.Marshal(&a)
		if err != nil {
			return // a time encoding/json refuses (a year past 9999)
		}
		if got := appendAttempt(nil, &a); string(got) != string(want) {
			t.Fatalf("appendAttempt =\n%s\nencoding/json =\n%s", got, want)
		}
	})
}
