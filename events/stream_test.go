package events

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events/natstest"
)

func TestEnsureStreamCapturesCoreNATSPublishes(t *testing.T) {
	ns := natstest.JetStream(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := StreamConfig{Subjects: Subjects{Prefix: "acme.events"}}
	if _, err := EnsureStream(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	s, err := EnsureStream(ctx, js, cfg) // idempotent
	if err != nil {
		t.Fatal(err)
	}
	// Plain core-NATS publish, no JetStream ack asked for.
	if err := nc.Publish("acme.events.ws.workflowRun.completed", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Dedupe by Nats-Msg-Id.
	for i := 0; i < 2; i++ {
		if _, err := js.Publish(ctx, "acme.events.ws.workflowRun.started", []byte(`{}`), jetstream.WithMsgID("same")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream holds %d messages, want 2 (core publish captured, duplicate dropped)", info.State.Msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := EnsureStream(ctx, js, StreamConfig{Subjects: Subjects{Prefix: "bad.*"}}); err == nil {
		t.Error("wildcard prefix accepted")
	}
}

func TestEnsureStreamLimits(t *testing.T) {
	ns := natstest.JetStream(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name         string
		cfg          StreamConfig
		wantMaxBytes int64
		wantErr      bool
	}{
		{"zero MaxBytes is unlimited", StreamConfig{Name: "A", Subjects: Subjects{Prefix: "a"}}, -1, false},
		{"MaxBytes kept", StreamConfig{Name: "B", Subjects: Subjects{Prefix: "b"}, MaxBytes: 1 << 20}, 1 << 20, false},
		{"negative MaxBytes refused", StreamConfig{Name: "C", Subjects: Subjects{Prefix: "c"}, MaxBytes: -5}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := EnsureStream(ctx, js, tc.cfg)
			if tc.wantErr {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := s.CachedInfo().Config
			if c.MaxBytes != tc.wantMaxBytes || c.Discard != jetstream.DiscardNew {
				t.Errorf("MaxBytes %d discard %v, want %d and DiscardNew", c.MaxBytes, c.Discard, tc.wantMaxBytes)
			}
		})
	}
}

// TestFullEventsStreamRefusesNewEvents: an events stream created by an
// older version (discarding the oldest) is switched to refusing new events
// at its cap, and then no acknowledged event is ever dropped: a JetStream
// publisher gets an error, a core-NATS publish is not stored.
func TestFullEventsStreamRefusesNewEvents(t *testing.T) {
	ns := natstest.JetStream(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := StreamConfig{Subjects: Subjects{Prefix: "events"}, MaxBytes: 64 << 10}
	// As the previous version created it.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultStreamName, Subjects: []string{cfg.Subjects.Filter()},
		Discard: jetstream.DiscardOld}); err != nil {
		t.Fatal(err)
	}
	s, err := EnsureStream(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"type":"workflowRun.completed","pad":"` + strings.Repeat("x", 1000) + `"}`)
	var acked int
	var refusal error
	for i := 0; i < 200 && refusal == nil; i++ {
		if _, err := js.Publish(ctx, "events.ws.workflowRun.completed", body); err != nil {
			refusal = err
		} else {
			acked++
		}
	}
	var apiErr *jetstream.APIError
	if refusal == nil || !errors.As(refusal, &apiErr) || !strings.Contains(apiErr.Description, "maximum bytes exceeded") {
		t.Fatalf("after %d acked events the publish error is %v, want a JetStream API error \"maximum bytes exceeded\"", acked, refusal)
	}
	if err := nc.Publish("events.ws.workflowRun.completed", body); err != nil { // no error: nobody is told
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.FirstSeq != 1 || info.State.Msgs != uint64(acked) {
		t.Errorf("stream holds seq %d.. (%d messages), want every one of the %d acked events from seq 1 and nothing else",
			info.State.FirstSeq, info.State.Msgs, acked)
	}
	t.Logf("%d events of %d bytes acked in a 64 KiB stream; then: %v", acked, len(body), refusal)
}

// TestEventsStreamHasNoServerSideMaxAge: the server would expire an event
// fan-out has not taken yet as readily as one delivered long ago, so the
// stream has no MaxAge (the capacity Monitor enforces the retention below
// the fan-out ack floor), and a stream an older version created with one
// loses it; the dedupe window still fits the retention.
func TestEventsStreamHasNoServerSideMaxAge(t *testing.T) {
	_, js := natstest.Client(t, natstest.JetStream(t))
	ctx := t.Context()
	cfg := StreamConfig{Subjects: Subjects{Prefix: "events"}, MaxAge: time.Minute, Duplicates: time.Hour}
	// As the previous version created it.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultStreamName, Subjects: []string{cfg.Subjects.Filter()},
		MaxAge: time.Hour, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	s, err := EnsureStream(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if c.MaxAge != 0 || c.Duplicates != time.Minute {
		t.Errorf("updated stream: MaxAge %s, Duplicates %s; want none and the 1m retention", c.MaxAge, c.Duplicates)
	}
	s, err = EnsureStream(ctx, js, StreamConfig{Name: "FRESH", Subjects: Subjects{Prefix: "fresh"}})
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CachedInfo().Config; c.MaxAge != 0 || c.Duplicates != 2*time.Minute {
		t.Errorf("new stream: MaxAge %s, Duplicates %s; want none and 2m", c.MaxAge, c.Duplicates)
	}
}
