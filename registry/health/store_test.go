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
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			defer func() { cancel(); <-done }()
			deadline := time.Now().Add(10 * time.Second)
			for s.Ready() != nil {
				if time.Now().After(deadline) {
					t.Fatal("bucket not ready")
				}
				time.Sleep(10 * time.Millisecond)
			}
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
