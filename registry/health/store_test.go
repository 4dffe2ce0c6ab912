package health

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events/natstest"
)

func TestBucketByteLimit(t *testing.T) {
	ns := natstest.JetStream(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name     string
		bucket   string
		maxBytes int64
		want     int64 // the bucket stream's MaxBytes
		wantErr  bool
	}{
		{"zero is no limit", "H_UNBOUNDED", 0, -1, false},
		{"bounded", "H_BOUNDED", 1 << 20, 1 << 20, false},
		{"negative refused", "H_NEGATIVE", -1, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bucket := tc.bucket
			s, err := New(Config{JetStream: js, Bucket: bucket, MaxBytes: tc.maxBytes, Logger: quiet})
			if tc.wantErr {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ctx := run(t, s)
			st, err := js.Stream(ctx, "KV_"+bucket)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.CachedInfo().Config.MaxBytes; got != tc.want {
				t.Errorf("bucket MaxBytes %d, want %d", got, tc.want)
			}
		})
	}
}

// TestLateEchoDoesNotRollBack: a write updates the local copy at once; the
// watch's echo of an earlier write, arriving after it, must not put the
// older record back (nor must an echo resurrect a record just reset).
func TestLateEchoDoesNotRollBack(t *testing.T) {
	_, js := natstest.Client(t, natstest.JetStream(t))
	s, err := New(Config{JetStream: js, Bucket: "H_ECHO", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := run(t, s)
	if err := s.Put(ctx, Record{WebhookID: "wh_1", State: Failing, ConsecutiveFailures: 1}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, "H_ECHO")
	if err != nil {
		t.Fatal(err)
	}
	first, err := kv.Get(ctx, "wh_1") // the entry the watch echoes for the first write
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, Record{WebhookID: "wh_1", State: CircuitOpen, ConsecutiveFailures: 2}); err != nil {
		t.Fatal(err)
	}
	s.apply(first) // the first write's echo, late
	if got := s.Health("wh_1"); got.ConsecutiveFailures != 2 || got.State != CircuitOpen {
		t.Errorf("after a late echo: %+v, want the second write", got)
	}
	second, err := kv.Get(ctx, "wh_1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Reset(ctx, "wh_1"); err != nil {
		t.Fatal(err)
	}
	s.apply(second) // the second write's echo, after the reset
	if got := s.Health("wh_1"); got.State != "" || got.ConsecutiveFailures != 0 {
		t.Errorf("after a reset and a late echo: %+v, want no record", got)
	}
	// The watch's own deletion clears the tombstone; a later write shows.
	time.Sleep(200 * time.Millisecond)
	if err := s.Put(ctx, Record{WebhookID: "wh_1", State: Failing, ConsecutiveFailures: 1}); err != nil {
		t.Fatal(err)
	}
	if got := s.Health("wh_1"); got.ConsecutiveFailures != 1 {
		t.Errorf("a write after the reset: %+v, want it", got)
	}
}

// run drives s until the test ends and returns once its bucket is ready;
// the context it returns ends with the test.
func run(t *testing.T, s *Store) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for s.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatal("bucket not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return ctx
}
