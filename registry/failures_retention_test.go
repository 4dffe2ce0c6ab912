package registry

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/webhookd/webhookd/events"
)

// storedFailures counts the records bbolt holds for a webhook, expired or
// not: what the retention must free, not only hide.
func storedFailures(t *testing.T, s *Store, webhookID string) int {
	t.Helper()
	n := 0
	if err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketFailures).Bucket([]byte(webhookID)); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// plantFailure writes a record straight into bbolt, as an earlier run
// would have left it, whatever its age.
func plantFailure(t *testing.T, s *Store, w Webhook, id string, at time.Time) {
	t.Helper()
	f := Failure{ID: id, WebhookID: w.ID, EventType: events.WorkflowRunCompleted, Reason: "max_attempts", LastAttemptAt: at}
	v, _ := json.Marshal(f)
	if err := s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketFailures).CreateBucketIfNotExists([]byte(w.ID))
		if err != nil {
			return err
		}
		return b.Put(failureKey(f), v)
	}); err != nil {
		t.Fatal(err)
	}
}

func failureIDs(t *testing.T, s *Store, w Webhook) []string {
	t.Helper()
	fs, err := s.Failures(context.Background(), w.Workspace, w.ID, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, f := range fs {
		ids = append(ids, f.ID)
	}
	return ids
}

// TestLocalFailureRetention: failure records kept in bbolt (no shared
// failure stream) honour --failure-retention and --failures-per-webhook:
// expired records are never shown, and are deleted at Open, on the
// webhook's next failure and by PruneFailures.
func TestLocalFailureRetention(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	now := time.Now()
	s, err := Open(Config{Path: path, FailureRetention: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a := mustCreate(t, s, "acme", "workflowRun.completed", "")
	b := mustCreate(t, s, "acme", "workflowRun.failed", "")
	plantFailure(t, s, a, "a-old", now.Add(-2*time.Hour))
	plantFailure(t, s, a, "a-new", now.Add(-time.Minute))
	plantFailure(t, s, b, "b-old", now.Add(-3*time.Hour))
	if got := failureIDs(t, s, a); len(got) != 2 {
		t.Fatalf("within a 24h retention: %v, want both", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened as the daemon does with --failure-retention 1h
	// --failures-per-webhook 2: Open prunes what is past the hour.
	s, err = Open(Config{Path: path, FailureRetention: time.Hour, MaxFailuresPerWebhook: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := failureIDs(t, s, a); len(got) != 1 || got[0] != "a-new" {
		t.Errorf("after reopening with 1h: %v, want only a-new", got)
	}
	if n := storedFailures(t, s, a.ID); n != 1 {
		t.Errorf("bbolt holds %d records of a, want 1: Open did not prune", n)
	}
	if bs := failureBuckets(t, s); len(bs) != 1 || bs[0] != a.ID {
		t.Errorf("failure buckets %v, want only a's (b's emptied)", bs)
	}

	// Records that expire while running are hidden at once...
	plantFailure(t, s, a, "a-stale", now.Add(-90*time.Minute))
	if got := failureIDs(t, s, a); len(got) != 1 || got[0] != "a-new" {
		t.Errorf("an expired record is listed: %v", got)
	}
	if _, err := s.Failure(ctx, "acme", a.ID, "a-stale"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Failure(a-stale) = %v, want ErrNotFound", err)
	}
	// ...deleted by the webhook's next failure, which also applies
	// --failures-per-webhook...
	for _, id := range []string{"a-1", "a-2"} {
		if err := s.RecordFailure(ctx, Failure{ID: id, WebhookID: a.ID, Workspace: "acme", LastAttemptAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if got := failureIDs(t, s, a); len(got) != 2 || got[0] != "a-2" || got[1] != "a-1" {
		t.Errorf("after two more failures: %v, want the newest 2", got)
	}
	if n := storedFailures(t, s, a.ID); n != 2 {
		t.Errorf("bbolt holds %d records of a, want 2", n)
	}
	// ...or by PruneFailures, for a webhook that has stopped failing.
	plantFailure(t, s, b, "b-stale", now.Add(-5*time.Hour))
	if n, err := s.PruneFailures(ctx); err != nil || n != 1 {
		t.Errorf("PruneFailures = %d, %v; want 1", n, err)
	}
	if n := storedFailures(t, s, b.ID); n != 0 {
		t.Errorf("bbolt holds %d records of b, want none", n)
	}
	if _, err := Open(Config{Path: filepath.Join(t.TempDir(), "x.db"), FailureRetention: -time.Second}); err == nil {
		t.Error("a negative FailureRetention was accepted")
	}
}
