package dispatcher_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/webhookd/webhookd/events"
)

// counter sums every sample of the named family whose label matches (every
// sample when label is empty), and
// returns it as a collector testutil.ToFloat64 can read.
func counter(t *testing.T, h *harness, name, label, value string) prometheus.Collector {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || hasLabel(m, label, value) {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sum"})
	g.Set(sum)
	return g
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

func TestMalformedEventsAreTerminatedAndCounted(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: nil})
	r := newReceiver(t, nil)
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	big := `{"type":"workflowRun.completed","pad":"` + strings.Repeat("x", 300<<10) + `"}`
	bad := []struct{ subject, body, reason string }{
		{"events.acme.workflowRun.completed", `not json`, "not_json"},
		{"events.acme.workflowRun.completed", `[1,2,3]`, "not_object"},
		{"events.acme.workflowRun.completed", `{"type":"workflowRun.exploded"}`, "unknown_type"},
		{"events.acme.workflowRun.completed", `{"type":"workflowRun.failed"}`, "type_mismatch"},
		{"events.acme.workflowRun.completed", big, "too_large"},
		{"events.acme", `{"type":"workflowRun.completed"}`, "bad_subject"},
		{"events.acme.workflowRun.nonsense", `{"type":"workflowRun.completed"}`, "unknown_type"},
	}
	for i, b := range bad {
		h.publish(b.subject, b.body, "bad-"+string(rune('a'+i)))
	}
	// A good event after the bad ones still flows.
	h.publish("events.acme.workflowRun.completed", completed, "good")
	waitFor(t, 10*time.Second, "good event delivered", func() bool { return r.count() >= 1 })
	waitFor(t, 10*time.Second, "all rejections counted", func() bool {
		for _, b := range bad {
			if testutil.ToFloat64(counter(t, h, "webhookd_events_rejected_total", "reason", b.reason)) < 1 {
				return false
			}
		}
		return true
	})
	want := map[string]float64{}
	for _, b := range bad {
		want[b.reason]++
	}
	for reason, n := range want {
		if v := testutil.ToFloat64(counter(t, h, "webhookd_events_rejected_total", "reason", reason)); v != n {
			t.Errorf("reason %s counted %v times, want %v", reason, v, n)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if r.count() != 1 {
		t.Errorf("receiver got %d deliveries, want only the good one", r.count())
	}
	// Terminated, not pending: nothing of the bad ones is left unacked.
	cons, err := h.js.Consumer(t.Context(), "WEBHOOKD_EVENTS", "webhookd-fanout")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "no event pending", func() bool {
		ci, err := cons.Info(t.Context())
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	})
}

func TestMetricsLintClean(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r := newReceiver(t, nil)
	h.addWebhook("acme", r.URL, events.WorkflowRunCompleted, "")
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	waitFor(t, 10*time.Second, "delivery", func() bool { return r.count() >= 1 })
	problems, err := testutil.GatherAndLint(h.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	mfs, _ := h.reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "event_type", "outcome", "status_class", "reason", "to", "stage", "action":
				default:
					t.Errorf("metric %s has unexpected label %q", mf.GetName(), l.GetName())
				}
			}
		}
	}
}
