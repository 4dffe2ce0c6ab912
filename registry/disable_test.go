package registry

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/webhookd/webhookd/events"
)

func openWithMetrics(t *testing.T, path string) (*Store, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := Open(Config{Path: path, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

func disabledGauge(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	return testutil.ToFloat64(gaugeOf(t, reg, "webhookd_webhooks_disabled"))
}

func matches(s *Store, w Webhook) bool {
	return ids(s.Index().Match(w.Workspace, w.EventType, w.WorkflowID, nil))[w.ID]
}

func TestDisableEnable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	s, reg := openWithMetrics(t, path)
	w := mustCreate(t, s, "acme", "workflowRun.completed", "WF-1")
	keep := mustCreate(t, s, "acme", "workflowRun.completed", "")
	at := time.Date(2026, 3, 4, 5, 6, 7, 891234567, time.FixedZone("x", 3600))
	// enable reports a change when it turned a disabled webhook on.
	enable := func(ws string) func() (Webhook, bool, error) {
		return func() (Webhook, bool, error) {
			before, _ := s.Index().Get(w.ID)
			got, err := s.Enable(ctx, ws, w.ID)
			return got, before.Disabled && !got.Disabled, err
		}
	}

	steps := []struct {
		name        string
		op          func() (Webhook, bool, error)
		err         error
		changed     bool
		disabled    bool
		reason      string
		disabledNum float64
	}{
		{"disable", func() (Webhook, bool, error) { return s.Disable(ctx, w.ID, DisabledFailing, at) }, nil, true, true, DisabledFailing, 1},
		{"disable again keeps the first reason", func() (Webhook, bool, error) {
			return s.Disable(ctx, w.ID, DisabledGone, at.Add(time.Hour))
		}, nil, false, true, DisabledFailing, 1},
		{"disable unknown", func() (Webhook, bool, error) { return s.Disable(ctx, "wh_nope", DisabledGone, at) }, ErrNotFound, false, true, DisabledFailing, 1},
		{"enable from another workspace", enable("other"), ErrNotFound, false, true, DisabledFailing, 1},
		{"enable unknown", func() (Webhook, bool, error) {
			got, err := s.Enable(ctx, "acme", "wh_nope")
			return got, false, err
		}, ErrNotFound, false, true, DisabledFailing, 1},
		{"enable", enable("acme"), nil, true, false, "", 0},
		{"enable again", enable("acme"), nil, false, false, "", 0},
		{"empty reason is manual", func() (Webhook, bool, error) { return s.Disable(ctx, w.ID, "", at) }, nil, true, true, DisabledManual, 1},
	}
	for _, st := range steps {
		got, changed, err := st.op()
		if st.err != nil {
			if !errors.Is(err, st.err) {
				t.Fatalf("%s: err = %v, want %v", st.name, err, st.err)
			}
		} else {
			if err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			if changed != st.changed {
				t.Fatalf("%s: changed = %v, want %v", st.name, changed, st.changed)
			}
			if got.ID != w.ID || got.Disabled != st.disabled || got.DisabledReason != st.reason {
				t.Fatalf("%s: returned %+v", st.name, got)
			}
		}
		// Every view agrees: the index, bbolt, Match and the gauge.
		ixw, ok := s.Index().Get(w.ID)
		stored, gerr := s.Get(ctx, "acme", w.ID)
		if !ok || gerr != nil || ixw.Disabled != st.disabled || stored.Disabled != st.disabled ||
			ixw.DisabledReason != st.reason || stored.DisabledReason != st.reason {
			t.Fatalf("%s: index %+v, stored %+v (%v)", st.name, ixw, stored, gerr)
		}
		if st.disabled && (!stored.DisabledAt.Equal(at.Truncate(time.Millisecond)) || stored.DisabledAt.Location() != time.UTC) {
			t.Fatalf("%s: disabledAt %v", st.name, stored.DisabledAt)
		}
		if !st.disabled && !stored.DisabledAt.IsZero() {
			t.Fatalf("%s: enabled webhook keeps disabledAt %v", st.name, stored.DisabledAt)
		}
		if matches(s, w) == st.disabled || !matches(s, keep) {
			t.Fatalf("%s: matched %v (disabled %v), other matched %v", st.name, matches(s, w), st.disabled, matches(s, keep))
		}
		if n := disabledGauge(t, reg); n != st.disabledNum {
			t.Fatalf("%s: webhookd_webhooks_disabled = %v, want %v", st.name, n, st.disabledNum)
		}
		if s.Count() != 2 {
			t.Fatalf("%s: count %d", st.name, s.Count())
		}
	}

	// The rebuilt index and gauge agree with what was stored.
	s.Close()
	s, reg = openWithMetrics(t, path)
	defer s.Close()
	if ixw, ok := s.Index().Get(w.ID); !ok || !ixw.Disabled || matches(s, w) || !matches(s, keep) {
		t.Fatalf("after reopen: %+v %v, matched %v", ixw, ok, matches(s, w))
	}
	if n := disabledGauge(t, reg); n != 1 {
		t.Fatalf("after reopen: webhookd_webhooks_disabled = %v", n)
	}
	if err := s.Delete(ctx, "acme", w.ID); err != nil {
		t.Fatal(err)
	}
	if n := disabledGauge(t, reg); n != 0 || s.Count() != 1 {
		t.Fatalf("after deleting the disabled webhook: gauge %v, count %d", n, s.Count())
	}
	if _, _, err := s.Disable(ctx, w.ID, DisabledGone, at); !errors.Is(err, ErrNotFound) {
		t.Fatalf("disable after delete: %v", err)
	}
}

func TestDisabledFieldsOnDisk(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "r.db"))
	defer s.Close()
	tests := []struct {
		name     string
		stored   string
		disabled bool
		reason   string
	}{
		{"record from before auto-disable", `{"id":"wh_1","workspace":"acme","url":"https://e.example/","eventType":"workflowRun.completed","workflowId":"","secret":"whsec_x","createdAt":"2026-01-01T00:00:00Z"}`, false, ""},
		{"disabled record", `{"id":"wh_1","workspace":"acme","url":"https://e.example/","eventType":"workflowRun.completed","workflowId":"","secret":"whsec_x","createdAt":"2026-01-01T00:00:00Z","disabled":true,"disabledReason":"gone","disabledAt":"2026-01-02T00:00:00.5Z"}`, true, "gone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, _, err := s.decode([]byte(tc.stored))
			if err != nil || w.Disabled != tc.disabled || w.DisabledReason != tc.reason || w.DisabledAt.IsZero() == tc.disabled {
				t.Fatalf("decoded %+v, %v", w, err)
			}
			// Encoding it again round-trips, and an enabled webhook's bytes
			// carry none of the new fields, so older builds read them too.
			v, err := s.encode(*w)
			if err != nil {
				t.Fatal(err)
			}
			back, _, err := s.decode(v)
			if err != nil || *back != *w {
				t.Fatalf("round trip: %+v, %v", back, err)
			}
			if !tc.disabled && string(v) != tc.stored {
				t.Fatalf("enabled webhook encodes as %s", v)
			}
		})
	}
}

// TestIndexReplaceKeepsMatchFree: replacing a webhook keeps its place in
// its bucket, disabling takes it out of Match, and Match still allocates
// nothing.
func TestIndexReplaceKeepsMatchFree(t *testing.T) {
	ix := newIndex()
	var hooks []*Webhook
	for _, id := range []string{"wh_a", "wh_b", "wh_c"} {
		w := &Webhook{ID: id, Workspace: "acme", EventType: events.WorkflowRunCompleted}
		ix.add(w)
		hooks = append(hooks, w)
	}
	order := func() string {
		var s string
		for _, w := range ix.Match("acme", events.WorkflowRunCompleted, "", nil) {
			s += w.ID[3:]
		}
		return s
	}
	steps := []struct {
		name     string
		w        Webhook
		want     string
		disabled int
	}{
		{"replace in place", Webhook{ID: "wh_b", Workspace: "acme", EventType: events.WorkflowRunCompleted, URL: "https://new.example/"}, "abc", 0},
		{"disable", Webhook{ID: "wh_b", Workspace: "acme", EventType: events.WorkflowRunCompleted, Disabled: true}, "ac", 1},
		{"disable another", Webhook{ID: "wh_a", Workspace: "acme", EventType: events.WorkflowRunCompleted, Disabled: true}, "c", 2},
		{"enable", Webhook{ID: "wh_b", Workspace: "acme", EventType: events.WorkflowRunCompleted}, "cb", 1},
		{"move to another key", Webhook{ID: "wh_c", Workspace: "acme", EventType: events.WorkflowRunFailed}, "b", 1},
	}
	for _, st := range steps {
		w := st.w
		if ix.put(&w) {
			t.Fatalf("%s: put of an indexed id reported an addition", st.name)
		}
		if got := order(); got != st.want {
			t.Fatalf("%s: match order %q, want %q", st.name, got, st.want)
		}
		got, ok := ix.Get(w.ID)
		if !ok || *got != w {
			t.Fatalf("%s: Get does not return the new webhook", st.name)
		}
		if again, _ := ix.Get(w.ID); again != got {
			t.Fatalf("%s: Get of an unchanged webhook returned another pointer", st.name)
		}
		if ix.disabledLen() != st.disabled || ix.Len() != 3 {
			t.Fatalf("%s: disabled %d, len %d", st.name, ix.disabledLen(), ix.Len())
		}
	}
	if hooks[1].URL != "" || hooks[1].Disabled {
		t.Fatal("a replaced webhook was modified in place; readers may hold it")
	}
	if m := ix.Match("acme", events.WorkflowRunFailed, "", nil); len(m) != 1 || m[0].ID != "wh_c" {
		t.Fatalf("moved webhook: %v", m)
	}
	if !ix.remove("wh_a") || ix.disabledLen() != 0 || ix.Len() != 2 || ix.remove("wh_a") {
		t.Fatalf("removing a disabled webhook: disabled %d len %d", ix.disabledLen(), ix.Len())
	}
	dst := make([]*Webhook, 0, 8)
	if n := testing.AllocsPerRun(100, func() { dst = ix.Match("acme", events.WorkflowRunCompleted, "WF-1", dst[:0]) }); n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}

// TestDisableConcurrentWithMatch: readers never see a torn index while
// webhooks are disabled and enabled (run with -race).
func TestDisableConcurrentWithMatch(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "r.db"))
	defer s.Close()
	var hooks []Webhook
	for range 8 {
		hooks = append(hooks, mustCreate(t, s, "acme", "workflowRun.completed", ""))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			dst := make([]*Webhook, 0, 16)
			for {
				select {
				case <-stop:
					return
				default:
				}
				dst = s.Index().Match("acme", events.WorkflowRunCompleted, "", dst[:0])
				for _, w := range dst {
					if w.Disabled {
						t.Error("Match returned a disabled webhook")
						return
					}
				}
			}
		})
	}
	var writers sync.WaitGroup
	for _, w := range hooks {
		writers.Go(func() {
			for range 20 {
				if _, _, err := s.Disable(ctx, w.ID, DisabledFailing, time.Now()); err != nil {
					t.Error(err)
				}
				if _, err := s.Enable(ctx, "acme", w.ID); err != nil {
					t.Error(err)
				}
			}
		})
	}
	writers.Wait()
	close(stop)
	wg.Wait()
	if m := s.Index().Match("acme", events.WorkflowRunCompleted, "", nil); len(m) != len(hooks) || s.Index().disabledLen() != 0 {
		t.Fatalf("after the writers: %d matched, %d disabled", len(m), s.Index().disabledLen())
	}
}
