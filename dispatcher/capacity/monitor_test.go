package capacity_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/webhookd/webhookd/dispatcher/capacity"
	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func connect(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return natstest.Client(t, natstest.JetStream(t))
}

// eventsStream is the events stream as the dispatcher creates it, with its
// fan-out consumer, and filled with n ~1 KiB events.
func eventsStream(t *testing.T, js jetstream.JetStream, maxBytes int64, n int) (jetstream.Stream, jetstream.Consumer) {
	t.Helper()
	ctx := t.Context()
	st, err := events.EnsureStream(ctx, js, events.StreamConfig{Subjects: events.Subjects{Prefix: "events"}, MaxBytes: maxBytes})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "webhookd-fanout", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(strings.Repeat("x", 1000))
	for i := range n {
		if _, err := js.Publish(ctx, "events.acme.workflowRun.completed", body); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	return st, cons
}

// fanOut acks the next n events, as fan-out would.
func fanOut(t *testing.T, cons jetstream.Consumer, n int) {
	t.Helper()
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(t.Context()); err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != n {
		t.Fatalf("fanned out %d events, want %d", got, n)
	}
}

func state(t *testing.T, st jetstream.Stream) jetstream.StreamState {
	t.Helper()
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}

func TestTrimPurgesOnlyFannedOutEvents(t *testing.T) {
	_, js := connect(t)
	const limit = 100 << 10 // ~95 events of ~1 KiB
	st, cons := eventsStream(t, js, limit, 85)
	reg := prometheus.NewRegistry()
	m, err := capacity.New(capacity.Config{JetStream: js, Logger: quiet, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, step := range []struct {
		name      string
		publish   int    // events published before this sample
		fanOut    int    // events fanned out before this sample
		wantFirst uint64 // first sequence kept after it
		wantReady bool
	}{
		// Over 80% with nothing fanned out: nothing may go; ready (< 95%).
		{name: "nothing fanned out", fanOut: 0, wantFirst: 1, wantReady: true},
		// 10 fanned out: exactly those go, though more would be needed.
		{name: "some fanned out", fanOut: 10, wantFirst: 11, wantReady: true},
		// Back over 80% and all fanned out: the oldest go until ~60% is left.
		{name: "all fanned out", publish: 10, fanOut: 85, wantFirst: 0, wantReady: true},
	} {
		t.Run(step.name, func(t *testing.T) {
			for range step.publish {
				if _, err := js.Publish(ctx, "events.acme.workflowRun.completed", []byte(strings.Repeat("x", 1000))); err != nil {
					t.Fatal(err)
				}
			}
			if step.fanOut > 0 {
				fanOut(t, cons, step.fanOut)
			}
			ci, err := cons.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			before := state(t, st)
			m.Sample(ctx)
			after := state(t, st)
			if after.FirstSeq-1 > ci.AckFloor.Stream {
				t.Errorf("purged up to seq %d, past the fan-out ack floor %d", after.FirstSeq-1, ci.AckFloor.Stream)
			}
			if after.LastSeq != before.LastSeq || after.Msgs != after.LastSeq-after.FirstSeq+1 {
				t.Errorf("state %+v: something other than the oldest events went", after)
			}
			if step.wantFirst != 0 && after.FirstSeq != step.wantFirst {
				t.Errorf("first kept seq %d, want %d", after.FirstSeq, step.wantFirst)
			}
			if step.wantFirst == 0 {
				if fill := float64(after.Bytes) / limit; fill > 0.61 || fill < 0.5 {
					t.Errorf("trimmed to %.0f%% full, want about 60%%", 100*fill)
				}
			}
			if ready := m.Ready() == nil; ready != step.wantReady {
				t.Errorf("Ready() = %v", m.Ready())
			}
		})
	}
	trimmed := testutil.ToFloat64(metric(t, reg, "webhookd_events_trimmed_total", ""))
	if final := state(t, st); trimmed != float64(final.FirstSeq-1) {
		t.Errorf("events_trimmed_total = %v, want the %d purged", trimmed, final.FirstSeq-1)
	}
}

// TestFullEventsStreamIsNotReady: events that cannot be trimmed fill the
// stream; Ready names it, publishers are refused, and every acknowledged
// event is kept.
func TestFullEventsStreamIsNotReady(t *testing.T) {
	_, js := connect(t)
	const limit = 40 << 10
	st, _ := eventsStream(t, js, limit, 0)
	m, err := capacity.New(capacity.Config{JetStream: js, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	acked := 0
	var refused error
	for refused == nil {
		if _, err := js.Publish(t.Context(), "events.acme.workflowRun.completed", []byte(strings.Repeat("y", 1000))); err != nil {
			refused = err
		} else {
			acked++
		}
	}
	m.Sample(t.Context())
	err = m.Ready()
	if !errors.Is(err, capacity.ErrNearlyFull) || !strings.Contains(err.Error(), "WEBHOOKD_EVENTS at 9") {
		t.Errorf("Ready() = %v, want ErrNearlyFull naming WEBHOOKD_EVENTS at 9x%%", err)
	}
	if s := state(t, st); s.FirstSeq != 1 || s.Msgs != uint64(acked) {
		t.Errorf("stream holds %d events from seq %d, want all %d acked from 1", s.Msgs, s.FirstSeq, acked)
	}
	t.Logf("publisher refused after %d events: %v; Ready: %v", acked, refused, err)
}

func TestGaugesAndPolicies(t *testing.T) {
	_, js := connect(t)
	ctx := t.Context()
	eventsStream(t, js, 1<<20, 0)
	mk := func(cfg jetstream.StreamConfig) {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	mk(jetstream.StreamConfig{Name: "DELIV", Subjects: []string{"d.>"}, Retention: jetstream.WorkQueuePolicy})
	mk(jetstream.StreamConfig{Name: "FAIL", Subjects: []string{"f.>"}, MaxBytes: 4 << 10, Discard: jetstream.DiscardOld})
	mk(jetstream.StreamConfig{Name: "KV_X", Subjects: []string{"kv.>"}, MaxBytes: 1 << 20, Discard: jetstream.DiscardNew})
	for i := 0; i < 10; i++ { // the drop-oldest stream is full to the brim, and that is fine
		if _, err := js.Publish(ctx, "f.x", make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ { // 3 KiB of a 3.1 KiB budget: 96%
		if _, err := js.Publish(ctx, "d.x", make([]byte, 990)); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	m, err := capacity.New(capacity.Config{JetStream: js, Logger: quiet, Registerer: reg, Streams: []capacity.Stream{
		{Name: "DELIV", Limit: 3200}, {Name: "FAIL"}, {Name: "KV_X"}, {Name: "MISSING"}}})
	if err != nil {
		t.Fatal(err)
	}
	// Every family is there before the first sample.
	if n := testutil.CollectAndCount(reg, "webhookd_store_bytes", "webhookd_store_limit_bytes"); n != 10 {
		t.Errorf("%d series before the first sample, want 10", n)
	}
	m.Sample(ctx)
	for _, tc := range []struct {
		stream, policy string
		limit          float64
	}{
		{"WEBHOOKD_EVENTS", "refuse", 1 << 20},
		{"DELIV", "refuse", 3200},
		{"FAIL", "drop_oldest", 4 << 10},
		{"KV_X", "refuse", 1 << 20},
		{"MISSING", "refuse", 0},
	} {
		if v := testutil.ToFloat64(metric(t, reg, "webhookd_store_limit_bytes", tc.stream, "policy", tc.policy)); v != tc.limit {
			t.Errorf("%s limit{policy=%s} = %v, want %v", tc.stream, tc.policy, v, tc.limit)
		}
	}
	if v := testutil.ToFloat64(metric(t, reg, "webhookd_store_bytes", "DELIV")); v < 3000 {
		t.Errorf("DELIV bytes = %v", v)
	}
	if n := testutil.CollectAndCount(reg, "webhookd_store_limit_bytes"); n != 5 {
		t.Errorf("%d limit series, want one per stream (the drop-oldest one moved labels)", n)
	}
	err = m.Ready()
	if err == nil || !strings.Contains(err.Error(), "DELIV at 9") || strings.Contains(err.Error(), "FAIL") {
		t.Errorf("Ready() = %v, want DELIV named and not the drop-oldest FAIL", err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestRunStopsWithItsContext(t *testing.T) {
	_, js := connect(t)
	m, err := capacity.New(capacity.Config{JetStream: js, Interval: 10 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	if err := m.Run(ctx); err == nil {
		t.Error("a second Run was accepted")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestConfigValidation(t *testing.T) {
	_, js := connect(t)
	for _, tc := range []struct {
		name string
		cfg  capacity.Config
		ok   bool
	}{
		{"zero values", capacity.Config{JetStream: js}, true},
		{"no JetStream", capacity.Config{}, false},
		{"trim target above trim mark", capacity.Config{JetStream: js, TrimAt: 0.5, TrimTo: 0.7}, false},
		{"trimming off", capacity.Config{JetStream: js, TrimAt: 1}, true},
		{"ready above 100%", capacity.Config{JetStream: js, ReadyAt: 1.5}, false},
		{"a stream twice", capacity.Config{JetStream: js, Streams: []capacity.Stream{{Name: "A"}, {Name: "A"}}}, false},
		{"the events stream again", capacity.Config{JetStream: js, Streams: []capacity.Stream{{Name: "WEBHOOKD_EVENTS"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := capacity.New(tc.cfg); (err == nil) != tc.ok {
				t.Errorf("New: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// metric sums the samples of family name whose stream label is stream
// (every sample when empty) and whose extra label matches.
func metric(t *testing.T, reg *prometheus.Registry, name, stream string, extra ...string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, s := range mf.GetMetric() {
			want := map[string]string{}
			if stream != "" {
				want["stream"] = stream
			}
			for i := 0; i+1 < len(extra); i += 2 {
				want[extra[i]] = extra[i+1]
			}
			for _, l := range s.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue samples
				}
				delete(want, l.GetName())
			}
			if len(want) > 0 {
				continue
			}
			sum += s.GetGauge().GetValue() + s.GetCounter().GetValue()
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sum"})
	g.Set(sum)
	return g
}
