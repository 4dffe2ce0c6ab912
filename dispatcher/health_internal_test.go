package dispatcher

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/dispatcher/breaker"
	"github.com/webhookd/webhookd/registry/health"
)

// slowHealth is a HealthStore whose Put blocks until released, so a test
// can record attempts while a flush is in flight. It stands for the
// shared bucket's round trip, not for NATS.
type slowHealth struct {
	localHealth
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *slowHealth) Put(ctx context.Context, r health.Record) error {
	s.once.Do(func() { close(s.entered) })
	<-s.release
	return s.localHealth.Put(ctx, r)
}

// TestFailuresCountedDuringAFlush: a failure recorded while the flusher is
// writing the previous count must count on from that count, not from the
// store's older copy. (CI caught a dead host whose circuit was open with
// one consecutive failure on record.)
func TestFailuresCountedDuringAFlush(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	hs := &slowHealth{localHealth: localHealth{m: map[string]health.Record{}},
		entered: make(chan struct{}), release: make(chan struct{})}
	d := &Dispatcher{cfg: Config{Health: hs, HealthSuccessInterval: time.Minute}, m: m}
	tr, err := newTracker(d)
	if err != nil {
		t.Fatal(err)
	}
	fail := outcome{webhookID: "wh_1", workspace: "ws", result: breaker.Timeout, class: "timeout"}
	now := time.Now()
	tr.record(fail, now)
	tr.record(fail, now)
	done := make(chan struct{})
	go func() { tr.writeDirty(); close(done) }()
	<-hs.entered
	tr.record(fail, now) // while the two are being written
	if got := tr.current("wh_1").ConsecutiveFailures; got != 3 {
		t.Errorf("during a flush: %d consecutive failures, want 3", got)
	}
	close(hs.release)
	<-done
	tr.writeDirty()
	got := hs.Health("wh_1")
	if got.ConsecutiveFailures != 3 || got.State != health.CircuitOpen {
		t.Errorf("written: %+v, want 3 failures and circuit_open", got)
	}
}
