package registry

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/webhookd/webhookd/events"
)

// seedFailures records n failures of w, one second apart, ids <prefix>0...
func seedFailures(t *testing.T, s *Store, w Webhook, prefix string, n int) {
	t.Helper()
	// Recent, so that the retention (30 days by default) keeps them.
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	for i := range n {
		f := Failure{ID: prefix + string(rune('0'+i)), WebhookID: w.ID, Workspace: w.Workspace, EventID: "e",
			EventType: events.WorkflowRunCompleted, Attempts: 3, Reason: "max_attempts",
			LastAttemptAt: base.Add(time.Duration(i) * time.Second), Body: []byte(`{"n":` + string(rune('0'+i)) + `}`)}
		if err := s.RecordFailure(context.Background(), f); err != nil {
			t.Fatal(err)
		}
	}
}

func failureBuckets(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketFailures).ForEachBucket(func(k []byte) error {
			out = append(out, string(k))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDrainFailures(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "r.db"))
	defer s.Close()
	a := mustCreate(t, s, "acme", "workflowRun.completed", "")
	b := mustCreate(t, s, "other", "workflowRun.failed", "")
	seedFailures(t, s, a, "a", 3)
	seedFailures(t, s, b, "b", 2)
	// Records of a webhook that is gone (left by an older version).
	orphan, _ := json.Marshal(Failure{ID: "z0", WebhookID: "wh_gone"})
	if err := s.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.Bucket(bucketFailures).CreateBucket([]byte("wh_gone"))
		if err != nil {
			return err
		}
		return bk.Put(failureKey(Failure{ID: "z0"}), orphan)
	}); err != nil {
		t.Fatal(err)
	}

	// Nothing is drained from a cancelled context.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.DrainFailures(cancelled, func(Failure) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled drain = %v", err)
	}

	// The shared log refuses a1: the drain stops there and keeps it and
	// everything after it.
	var seen []string
	refuse := errors.New("nats: timeout")
	err := s.DrainFailures(ctx, func(f Failure) error {
		seen = append(seen, f.ID)
		if f.ID == "a1" {
			return refuse
		}
		return nil
	})
	if !errors.Is(err, refuse) || !strings.Contains(err.Error(), "a1") {
		t.Fatalf("drain = %v, want the refusal of a1", err)
	}
	if fs, _ := s.Failures(ctx, "acme", a.ID, 10); len(fs) != 2 || fs[0].ID != "a2" || fs[1].ID != "a1" {
		t.Fatalf("after the refusal acme keeps %+v", fs)
	}

	// The second run hands over the rest, each once, oldest first, with
	// its workspace and body; the orphan never reaches fn.
	got := map[string]Failure{}
	var order []string
	if err := s.DrainFailures(ctx, func(f Failure) error {
		got[f.ID] = f
		order = append(order, f.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	all := strings.Join(append(seen, order...), ",")
	for _, want := range []string{"a0", "a1", "a2", "b0", "b1"} {
		if strings.Count(all, want) < 1 {
			t.Errorf("%s never handed over (%s)", want, all)
		}
	}
	if strings.Contains(all, "z0") {
		t.Errorf("orphan handed over: %s", all)
	}
	if strings.Count(all, "a0") != 1 {
		t.Errorf("a0 handed over again after it was accepted: %s", all)
	}
	if f := got["a2"]; f.Workspace != "acme" || f.WebhookID != a.ID || string(f.Body) != `{"n":2}` {
		t.Errorf("a2 = %+v", f)
	}
	if f := got["b1"]; f.Workspace != "other" || f.EventType != events.WorkflowRunCompleted {
		t.Errorf("b1 = %+v", f)
	}
	if i, j := strings.Index(all, "a1,a2"), strings.Index(all, "b0,b1"); i < 0 || j < 0 {
		t.Errorf("not oldest first within a webhook: %s", all)
	}
	for _, c := range []struct{ ws, id string }{{"acme", a.ID}, {"other", b.ID}} {
		if fs, err := s.Failures(ctx, c.ws, c.id, 10); err != nil || len(fs) != 0 {
			t.Errorf("%s still has %d records, %v", c.id, len(fs), err)
		}
	}
	if bs := failureBuckets(t, s); len(bs) != 0 {
		t.Errorf("failure buckets left: %v", bs)
	}

	// Draining an empty store calls nothing; recording still works after.
	if err := s.DrainFailures(ctx, func(Failure) error { t.Error("fn called on an empty store"); return nil }); err != nil {
		t.Fatal(err)
	}
	seedFailures(t, s, a, "c", 1)
	if f, err := s.Failure(ctx, "acme", a.ID, "c0"); err != nil || f.ID != "c0" {
		t.Fatalf("record after drain: %+v, %v", f, err)
	}
}
