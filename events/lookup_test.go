package events

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events/natstest"
)

func TestFinder(t *testing.T) {
	_, js := natstest.Client(t, natstest.JetStream(t))
	ctx := context.Background()
	subj := Subjects{Prefix: "events"}
	if _, err := EnsureStream(ctx, js, StreamConfig{Name: "EV", Subjects: subj}); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"type":"workflowRun.completed","workflowId":"WF"}`)
	plain, err := js.Publish(ctx, "events.acme.workflowRun.completed", body)
	if err != nil {
		t.Fatal(err)
	}
	for range 50 { // others on the subject, before the one with an id
		if _, err := js.Publish(ctx, "events.acme.workflowRun.completed", body); err != nil {
			t.Fatal(err)
		}
	}
	withID, err := js.Publish(ctx, "events.acme.workflowRun.completed", body, jetstream.WithMsgID("run-1"))
	if err != nil {
		t.Fatal(err)
	}
	f := Finder{JetStream: js, Stream: "EV", Decoder: Decoder{Subjects: subj}}
	hint := Hint{Subject: "events.acme.workflowRun.completed", Published: time.Now()}
	for _, tc := range []struct {
		name, id string
		hint     Hint
		wantSeq  uint64 // 0: not found
	}{
		{"by sequence", "seq-" + itoa(plain.Sequence), Hint{}, plain.Sequence},
		{"a sequence holding an event with its own id", "seq-" + itoa(withID.Sequence), Hint{}, 0},
		{"unknown sequence", "seq-99999", Hint{}, 0},
		{"by Nats-Msg-Id with a hint", "run-1", hint, withID.Sequence},
		{"by Nats-Msg-Id without a hint", "run-1", Hint{}, 0},
		{"an id nobody used", "run-2", hint, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := f.Find(ctx, tc.id, tc.hint)
			if tc.wantSeq == 0 {
				if !errors.Is(err, ErrEventNotFound) {
					t.Fatalf("Find = %+v, %v; want ErrEventNotFound", ev, err)
				}
				return
			}
			if err != nil || ev.StreamSeq != tc.wantSeq || ev.ID != tc.id || ev.WorkflowID != "WF" || ev.Workspace != "acme" {
				t.Fatalf("Find = %+v, %v", ev, err)
			}
		})
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
