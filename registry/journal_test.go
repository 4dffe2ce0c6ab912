package registry

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/webhookd/webhookd/events"
)

// TestApplyChangesUpdates: a journal value for a known id replaces the
// webhook in bbolt, the index and the gauge; runs that change one id
// several times end in the last state; echoes and replays change nothing.
func TestApplyChangesUpdates(t *testing.T) {
	ctx := context.Background()
	base, err := New("acme", Input{URL: "https://e.example/", EventType: "workflowRun.completed"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	disabled := base
	disabled.Disabled, disabled.DisabledReason, disabled.DisabledAt = true, DisabledGone, time.Now().UTC().Truncate(time.Millisecond)
	other, err := New("acme", Input{URL: "https://o.example/", EventType: "workflowRun.completed"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}

	type want struct {
		present, disabled bool
		disabledNum       float64
		count             int
	}
	tests := []struct {
		name  string
		setup []Webhook // applied first, one run each
		run   []Webhook // one run; an ID-only webhook (no URL) is a deletion
		want  want
	}{
		{"create", nil, []Webhook{base}, want{true, false, 0, 1}},
		{"update replaces", []Webhook{base}, []Webhook{disabled}, want{true, true, 1, 1}},
		{"echo of the same bytes", []Webhook{base, disabled}, []Webhook{disabled}, want{true, true, 1, 1}},
		{"update back to bytes bbolt had before the run", []Webhook{base}, []Webhook{disabled, base}, want{true, false, 0, 1}},
		{"create and update in one run", nil, []Webhook{base, disabled}, want{true, true, 1, 1}},
		{"delete after update", []Webhook{base, disabled}, []Webhook{{ID: base.ID}}, want{false, false, 0, 0}},
		{"update then delete in one run", []Webhook{base}, []Webhook{disabled, {ID: base.ID}}, want{false, false, 0, 0}},
		{"create then delete in one run", nil, []Webhook{base, {ID: base.ID}}, want{false, false, 0, 0}},
		{"delete of an unknown id", nil, []Webhook{{ID: base.ID}}, want{false, false, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, reg := openWithMetrics(t, filepath.Join(t.TempDir(), "r.db"))
			defer s.Close()
			if err := s.Create(ctx, other); err != nil {
				t.Fatal(err)
			}
			rev := uint64(0)
			changes := func(ws []Webhook) []Change {
				out := make([]Change, len(ws))
				for i, w := range ws {
					rev++
					out[i] = Change{ID: w.ID, Revision: rev}
					if w.URL != "" {
						v, err := s.Encode(w)
						if err != nil {
							t.Fatal(err)
						}
						out[i].Value = v
					}
				}
				return out
			}
			for _, w := range tc.setup {
				if _, err := s.ApplyChanges(changes([]Webhook{w})); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.ApplyChanges(changes(tc.run)); err != nil {
				t.Fatal(err)
			}
			ixw, inIndex := s.Index().Get(base.ID)
			stored, gerr := s.Get(ctx, "acme", base.ID)
			if inIndex != tc.want.present || (gerr == nil) != tc.want.present {
				t.Fatalf("present: index %v, bbolt %v; want %v", inIndex, gerr, tc.want.present)
			}
			if tc.want.present && (ixw.Disabled != tc.want.disabled || stored.Disabled != tc.want.disabled) {
				t.Fatalf("disabled: index %v, bbolt %v; want %v", ixw.Disabled, stored.Disabled, tc.want.disabled)
			}
			inMatch := ids(s.Index().Match("acme", events.WorkflowRunCompleted, "", nil))[base.ID]
			if inMatch != (tc.want.present && !tc.want.disabled) {
				t.Fatalf("matched %v", inMatch)
			}
			if n := disabledGauge(t, reg); n != tc.want.disabledNum || s.Count() != tc.want.count+1 {
				t.Fatalf("gauge %v count %d; want %v, %d", n, s.Count(), tc.want.disabledNum, tc.want.count+1)
			}
			if r, _ := s.JournalRevision(); r != rev {
				t.Fatalf("resume point %d, want %d", r, rev)
			}
		})
	}
}

// TestJournalUpdate: with a journal, Disable and Enable go through its
// Update (compare-and-swap on the journal's bytes), not straight to bbolt.
func TestJournalUpdate(t *testing.T) {
	ctx := context.Background()
	s, reg := openWithMetrics(t, filepath.Join(t.TempDir(), "r.db"))
	defer s.Close()
	j := &loopJournal{s: s, values: map[string][]byte{}}
	s.UseJournal(j)
	w, err := New("acme", Input{URL: "https://e.example/", EventType: "workflowRun.completed"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	if _, changed, err := s.Disable(ctx, w.ID, DisabledFailing, time.Now()); err != nil || !changed {
		t.Fatalf("disable: %v %v", changed, err)
	}
	if _, changed, err := s.Disable(ctx, w.ID, DisabledFailing, time.Now()); err != nil || changed || j.updates != 1 {
		t.Fatalf("second disable: changed %v, %v, journal writes %d", changed, err, j.updates)
	}
	if got, _ := s.Index().Get(w.ID); !got.Disabled || disabledGauge(t, reg) != 1 {
		t.Fatalf("after disable through the journal: %+v", got)
	}
	if _, err := s.Enable(ctx, "acme", w.ID); err != nil || j.updates != 2 {
		t.Fatalf("enable: %v, journal writes %d", err, j.updates)
	}
	if got, _ := s.Index().Get(w.ID); got.Disabled || disabledGauge(t, reg) != 0 {
		t.Fatalf("after enable through the journal: %+v", got)
	}
}

// loopJournal is the smallest Journal: it keeps values in a map and
// applies every change straight back to its one Store, in order. (The
// replica package tests the real one on NATS.)
type loopJournal struct {
	s       *Store
	values  map[string][]byte
	rev     uint64
	updates int
}

func (j *loopJournal) Put(_ context.Context, id string, v []byte) error {
	j.values[id] = v
	j.rev++
	_, err := j.s.ApplyChanges([]Change{{ID: id, Value: v, Revision: j.rev}})
	return err
}

func (j *loopJournal) Update(_ context.Context, id string, change func([]byte) ([]byte, error)) error {
	cur, ok := j.values[id]
	if !ok {
		return ErrNotFound
	}
	v, err := change(cur)
	if err != nil || v == nil {
		return err
	}
	j.updates++
	return j.Put(context.Background(), id, v)
}

func (j *loopJournal) Delete(_ context.Context, id string) error {
	delete(j.values, id)
	j.rev++
	_, err := j.s.ApplyChanges([]Change{{ID: id, Revision: j.rev}})
	return err
}

// TestResumePointStaysBeforeSealedEntry: an entry this Store cannot open
// keeps the recorded resume point below it, in its own run and, through
// hold, in later ones, so a restart reads it again instead of resuming
// past it.
func TestResumePointStaysBeforeSealedEntry(t *testing.T) {
	k1, k2 := make([]byte, 32), make([]byte, 32)
	k2[0] = 1
	open := func(path string, key []byte) *Store {
		sealer, err := NewSealer([][]byte{key})
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(Config{Path: path, Sealer: sealer})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	writer, s := open(filepath.Join(t.TempDir(), "w.db"), k1), open(filepath.Join(t.TempDir(), "r.db"), k2)
	value := func(s *Store) (string, []byte) {
		w, err := New("acme", Input{URL: "https://e.example/", EventType: "workflowRun.completed"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.Encode(w)
		if err != nil {
			t.Fatal(err)
		}
		return w.ID, v
	}
	resume := func() uint64 {
		rev, err := s.JournalRevision()
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	ownID, own := value(s)
	lockedID, locked := value(writer)
	refused, err := s.ApplyChanges([]Change{{ID: ownID, Value: own, Revision: 4}, {ID: lockedID, Value: locked, Revision: 5},
		{Revision: 6}})
	if err != nil || len(refused) != 1 || refused[0].Reason != RefusedSealed {
		t.Fatalf("refused %v, %v; want the entry sealed with the other key", refused, err)
	}
	if got := resume(); got != 4 {
		t.Fatalf("resume point %d after a run with a sealed entry at 5, want 4", got)
	}
	laterID, later := value(s)
	if _, err := s.ApplyChangesHolding([]Change{{ID: laterID, Value: later, Revision: 7}}, 5); err != nil {
		t.Fatal(err)
	}
	if got := resume(); got != 4 {
		t.Fatalf("resume point %d with the entry at 5 still held, want 4", got)
	}
	if _, err := s.ApplyChanges([]Change{{ID: lockedID, Revision: 8}}); err != nil {
		t.Fatal(err)
	}
	if got := resume(); got != 8 {
		t.Fatalf("resume point %d once nothing is held, want 8", got)
	}
	if _, ok := s.Index().Get(laterID); !ok {
		t.Fatal("an entry after the held one was not applied")
	}
}
