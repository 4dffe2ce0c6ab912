package events

import (
	"context"
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
