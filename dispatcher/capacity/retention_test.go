package capacity_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/webhookd/webhookd/dispatcher/capacity"
)

// TestRetentionPurgesOnlyFannedOutEvents: the events stream has no
// server-side MaxAge; the Monitor keeps the retention (--event-retention)
// instead: old events already fanned out go, an event fan-out has not
// acknowledged stays however old, and young ones stay though fanned out.
func TestRetentionPurgesOnlyFannedOutEvents(t *testing.T) {
	_, js := connect(t)
	st, cons := eventsStream(t, js, 1<<20, 10) // seq 1-10, far below any trim mark
	if age := st.CachedInfo().Config.MaxAge; age != 0 {
		t.Fatalf("events stream MaxAge %s: the server would expire unfanned events", age)
	}
	const retention = time.Hour
	var now time.Time
	reg := prometheus.NewRegistry()
	m, err := capacity.New(capacity.Config{JetStream: js, Retention: retention, Now: func() time.Time { return now },
		Logger: quiet, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	fanOut(t, cons, 6) // seq 1-6 fanned out, 7-10 not (fan-out paused, say)

	now = time.Now()
	m.Sample(ctx) // all young: nothing goes, fanned out or not
	if s := state(t, st); s.FirstSeq != 1 || s.Msgs != 10 {
		t.Fatalf("young events purged: %+v", s)
	}

	time.Sleep(20 * time.Millisecond) // stored times tell the batches apart
	for range 5 {                     // seq 11-15
		if _, err := js.Publish(ctx, "events.acme.workflowRun.completed", []byte(strings.Repeat("x", 1000))); err != nil {
			t.Fatal(err)
		}
	}
	young, err := st.GetMsg(ctx, 11)
	if err != nil {
		t.Fatal(err)
	}
	at := young.Time.Add(retention) // seq 1-10 are past the retention, 11-15 not

	for _, step := range []struct {
		name      string
		now       time.Time
		fanOut    int
		wantFirst uint64
		wantMsgs  uint64
	}{
		{name: "old ones fanned out go, old unfanned ones stay", now: at, wantFirst: 7, wantMsgs: 9},
		{name: "a week later, still unfanned: still kept", now: at.Add(7 * 24 * time.Hour), wantFirst: 7, wantMsgs: 9},
		{name: "fan-out caught up: the old ones go, the young stay", now: at, fanOut: 9, wantFirst: 11, wantMsgs: 5},
	} {
		t.Run(step.name, func(t *testing.T) {
			if step.fanOut > 0 {
				fanOut(t, cons, step.fanOut)
			}
			now = step.now
			m.Sample(ctx)
			if s := state(t, st); s.FirstSeq != step.wantFirst || s.Msgs != step.wantMsgs {
				t.Errorf("%d events kept from seq %d, want %d from seq %d", s.Msgs, s.FirstSeq, step.wantMsgs, step.wantFirst)
			}
		})
	}
	if v := testutil.ToFloat64(metric(t, reg, "webhookd_events_expired_total", "")); v != 10 {
		t.Errorf("events_expired_total = %v, want 10", v)
	}
	if v := testutil.ToFloat64(metric(t, reg, "webhookd_events_trimmed_total", "")); v != 0 {
		t.Errorf("events_trimmed_total = %v, want 0: nothing was purged for room", v)
	}
}
