package events_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
)

func connectJS(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	_, js := natstest.Connect(t, url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	return js
}

const completed = `{"type":"workflowRun.completed","workflowId":"WF-1","workflowRunId":"r-1"}`

// TestPublisherStoresAndDeduplicates: each publish is acknowledged by the
// events stream with its sequence; a repeated message id is reported a
// duplicate with the first sequence and stored once; what is stored is
// what the fan-out's decoder reads, with the message id as the event id.
func TestPublisherStoresAndDeduplicates(t *testing.T) {
	ns := natstest.JetStream(t)
	js := connectJS(t, ns.ClientURL())
	ctx := t.Context()
	subjects := events.Subjects{}
	stream, err := events.EnsureStream(ctx, js, events.StreamConfig{Subjects: subjects})
	if err != nil {
		t.Fatal(err)
	}
	p, err := events.NewPublisher(js, events.PublisherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	subject := subjects.For("acme", events.WorkflowRunCompleted)
	steps := []struct {
		name    string
		msgID   string
		data    string
		seq     uint64
		dup     bool
		eventID string
	}{
		{"first", "acme:r-1", completed, 1, false, "acme:r-1"},
		{"same id again", "acme:r-1", completed, 1, true, "acme:r-1"},
		{"same id, other body: still the first", "acme:r-1", `{"type":"workflowRun.completed"}`, 1, true, "acme:r-1"},
		{"another id", "acme:r-2", completed, 2, false, "acme:r-2"},
		{"no id", "", completed, 3, false, "seq-3"},
		{"no id again: a new event", "", completed, 4, false, "seq-4"},
	}
	dec := events.Decoder{Subjects: subjects}
	for _, st := range steps {
		seq, dup, err := p.Publish(ctx, subject, []byte(st.data), st.msgID)
		if err != nil || seq != st.seq || dup != st.dup {
			t.Fatalf("%s: seq %d dup %v err %v; want seq %d dup %v", st.name, seq, dup, err, st.seq, st.dup)
		}
		raw, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := dec.Decode(events.Message{Subject: raw.Subject, MsgID: raw.Header.Get(jetstream.MsgIDHeader),
			StreamSeq: raw.Sequence, Timestamp: raw.Time, Data: raw.Data})
		if err != nil || ev.ID != st.eventID || ev.Workspace != "acme" || ev.WorkflowID != "WF-1" || string(ev.Body) != completed {
			t.Fatalf("%s: stored event %+v, %v", st.name, ev, err)
		}
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 4 {
		t.Fatalf("stream holds %d messages, want 4", info.State.Msgs)
	}
}

// TestPublisherFailures: every way the stream can fail to store an event
// is an error of the right kind, never an acknowledgement.
func TestPublisherFailures(t *testing.T) {
	ns := natstest.JetStream(t)
	js := connectJS(t, ns.ClientURL())
	ctx := t.Context()
	if _, err := events.EnsureStream(ctx, js, events.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	// A stream at its byte cap refuses new events (DiscardNew).
	if _, err := events.EnsureStream(ctx, js, events.StreamConfig{Name: "SMALL", Subjects: events.Subjects{Prefix: "small"},
		MaxBytes: 512}); err != nil {
		t.Fatal(err)
	}
	// A stream fan-out does not read.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}
	big := `{"type":"workflowRun.started","pad":"` + strings.Repeat("x", 600) + `"}`
	tests := []struct {
		name    string
		stream  string
		subject string
		data    string
		want    error
	}{
		{"subject of another stream", "", "other.acme.workflowRun.started", completed, events.ErrNotStored},
		{"subject no stream captures", "", "nowhere.acme.workflowRun.started", completed, events.ErrUnacknowledged},
		{"stream at its cap", "SMALL", "small.acme.workflowRun.started", big, events.ErrNotStored},
		{"events stream that does not exist", "MISSING", "events.acme.workflowRun.started", completed, events.ErrNotStored},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := events.NewPublisher(js, events.PublisherConfig{Stream: tc.stream, Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			seq, _, err := p.Publish(ctx, tc.subject, []byte(tc.data), "id-1")
			if !errors.Is(err, tc.want) || seq != 0 {
				t.Fatalf("seq %d, err %v; want %v", seq, err, tc.want)
			}
		})
	}

	// NATS gone: no acknowledgement within the timeout.
	p, err := events.NewPublisher(js, events.PublisherConfig{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	start := time.Now()
	if _, _, err := p.Publish(ctx, "events.acme.workflowRun.started", []byte(completed), "id-2"); !errors.Is(err, events.ErrUnacknowledged) {
		t.Fatalf("publish with NATS down: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("publish with NATS down took %s; the timeout is 300ms", d)
	}
	// A caller's earlier deadline wins over the configured timeout.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, _, err := p.Publish(short, "events.acme.workflowRun.started", []byte(completed), "id-3"); !errors.Is(err, events.ErrUnacknowledged) {
		t.Fatalf("publish past the caller's deadline: %v", err)
	}
}

func TestNewPublisherConfig(t *testing.T) {
	ns := natstest.JetStream(t)
	js := connectJS(t, ns.ClientURL())
	if _, err := events.NewPublisher(nil, events.PublisherConfig{}); err == nil {
		t.Fatal("nil JetStream accepted")
	}
	if _, err := events.NewPublisher(js, events.PublisherConfig{Timeout: -time.Second}); err == nil {
		t.Fatal("negative timeout accepted")
	}
}
