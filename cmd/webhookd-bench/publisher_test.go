package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestPacerSchedule(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	cases := []struct {
		rate float64
		i    int
		want time.Duration
	}{
		{1000, 0, 0},
		{1000, 1, time.Millisecond},
		{1000, 30_000, 30 * time.Second},
		{1000, 999_999, 999_999 * time.Millisecond}, // no drift over a million events
		{3, 1, 333_333_333},
		{3, 3, time.Second},
		{0.5, 2, 4 * time.Second},
		{1e6, 1_500_000, 1500 * time.Millisecond},
		{0, 12345, 0}, // unpaced: everything due at once
	}
	for _, c := range cases {
		if got := (pacer{start: start, rate: c.rate}).due(c.i).Sub(start); got != c.want {
			t.Errorf("rate %v event %d: due at +%v, want +%v", c.rate, c.i, got, c.want)
		}
	}
	p := pacer{start: start, rate: 7}
	for i := 1; i < 10000; i++ {
		if !p.due(i).After(p.due(i - 1)) {
			t.Fatalf("due(%d) = %v not after due(%d) = %v", i, p.due(i), i-1, p.due(i-1))
		}
	}
}

// TestGenerateStampsScheduledTime is the open model: when the sender is
// slower than the schedule, each event still carries its scheduled time,
// so the queueing the slow sender causes shows up as latency.
func TestGenerateStampsScheduledTime(t *testing.T) {
	p := pacer{start: time.Now(), rate: 1000}
	var got []time.Time
	err := generate(context.Background(), 20, p, func(seq int, sentAt time.Time) error {
		got = append(got, sentAt)
		time.Sleep(3 * time.Millisecond) // a sender three times too slow
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, at := range got {
		if !at.Equal(p.due(i)) {
			t.Errorf("event %d stamped %v after start, scheduled %v", i, at.Sub(p.start), p.due(i).Sub(p.start))
		}
	}
	if time.Since(p.start) < 20*3*time.Millisecond {
		t.Error("sender delays were not waited for")
	}
}

func TestGenerateWaitsForSchedule(t *testing.T) {
	p := pacer{start: time.Now(), rate: 100}
	err := generate(context.Background(), 11, p, func(seq int, sentAt time.Time) error {
		if now := time.Now(); now.Before(sentAt) {
			t.Errorf("event %d sent %v before its time", seq, sentAt.Sub(now))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(p.start); el < 100*time.Millisecond {
		t.Errorf("11 events at 100/s took %v, want >= 100ms", el)
	}
}

func TestGenerateStops(t *testing.T) {
	boom := errors.New("boom")
	n := 0
	err := generate(context.Background(), 10, pacer{}, func(seq int, _ time.Time) error {
		n++
		if seq == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || n != 4 {
		t.Errorf("err %v after %d sends, want boom after 4", err, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := generate(ctx, 10, pacer{start: time.Now(), rate: 1}, func(int, time.Time) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestEventBodyRoundTrip(t *testing.T) {
	for _, size := range []int{0, 200, 512, 4096} {
		s := newEventShape("abc123", size)
		for _, seq := range []int{0, 7, 123456} {
			at := time.Unix(1_700_000_000, 123456789)
			body := s.appendBody(nil, seq, at)
			if size > 200 && (len(body) < size-12 || len(body) > size+12) { // sequence digits vary, twice
				t.Errorf("size %d: body is %d bytes", size, len(body))
			}
			gotSeq, gotAt, err := parseBenchFields(body)
			if err != nil || gotSeq != seq || gotAt != at.UnixNano() {
				t.Errorf("parse %s: %d %d %v", body, gotSeq, gotAt, err)
			}
		}
	}
}

func FuzzParseBenchFields(f *testing.F) {
	s := newEventShape("fz", 100)
	f.Add(s.appendBody(nil, 42, time.Unix(0, 1)))
	f.Add([]byte(`{"benchSeq":1}`))
	f.Add([]byte(`{"benchSeq":99999999999999999999999,"sentAt":1}`))
	f.Add([]byte(`"sentAt":-1,"benchSeq":`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		seq, at, err := parseBenchFields(body)
		if err != nil {
			return
		}
		if seq < 0 || seq > 1<<40 || at < 0 {
			t.Fatalf("accepted seq %d sentAt %d from %q", seq, at, body)
		}
	})
}

// startJetStream runs an in-process NATS server with JetStream and a
// stream over the bench subject.
func startJetStream(t *testing.T) (url string, js jetstream.JetStream) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err = jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "EV", Subjects: []string{"events.>"}})
	if err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL(), js
}

func TestPublisherAcksEveryEvent(t *testing.T) {
	url, js := startJetStream(t)
	cases := []struct {
		name   string
		n      int
		window int
		rate   float64
	}{
		{"window 1", 50, 1, 0},
		{"window 64", 2000, 64, 0},
		{"paced", 40, 8, 400},
	}
	var total uint64
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			shape := newEventShape(randomID(), 300)
			p, err := newPublisher(publisherConfig{NATSURL: url, Subject: "events.bench.workflowRun.completed", Shape: shape, Window: c.window})
			if err != nil {
				t.Fatal(err)
			}
			defer p.close()
			res, err := p.run(context.Background(), c.n, pacer{start: time.Now(), rate: c.rate})
			if err != nil || res.Generated != c.n || res.Acked != c.n {
				t.Fatalf("run: %+v %v", res, err)
			}
			total += uint64(c.n)
			// The last event is there with its Nats-Msg-Id and intact body.
			st, err := js.Stream(context.Background(), "EV")
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(context.Background())
			if err != nil || info.State.Msgs != total {
				t.Fatalf("stream holds %d, want %d (%v)", info.State.Msgs, total, err)
			}
			m, err := st.GetLastMsgForSubject(context.Background(), "events.bench.workflowRun.completed")
			if err != nil {
				t.Fatal(err)
			}
			seq, _, err := parseBenchFields(m.Data)
			if err != nil || seq != c.n-1 || m.Header.Get(jetstream.MsgIDHeader) != shape.msgID(c.n-1) {
				t.Fatalf("last message: seq %d (%v), id %q", seq, err, m.Header.Get(jetstream.MsgIDHeader))
			}
		})
	}
}
