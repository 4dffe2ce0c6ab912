package registry

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/webhookd/webhookd/events"
)

// TestOpenLargeRegistry loads more records than one decode chunk, past the
// size where Open releases file pages, and checks every record is indexed
// and matchable, including ones sharing a key and a deleted-then-reopened one.
func TestOpenLargeRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 70,000 records")
	}
	const n = loadChunk + 4464 // two chunks, the second partial
	path := filepath.Join(t.TempDir(), "r.db")
	s, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	want := make([]Webhook, n)
	err = db.Update(func(tx *bolt.Tx) error {
		for i := range want {
			ws := "ws-" + strconv.Itoa(i%3)
			w, err := New(ws, Input{URL: "https://example.com/" + strconv.Itoa(i%7),
				EventType: string(events.Types[i%4]), WorkflowID: "wf-" + strconv.Itoa(i/2)}, now)
			if err != nil {
				return err
			}
			b, err := tx.Bucket(bucketWebhooks).CreateBucketIfNotExists([]byte(ws))
			if err != nil {
				return err
			}
			v, _ := json.Marshal(w)
			if err := b.Put([]byte(w.ID), v); err != nil {
				return err
			}
			want[i] = w
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s, err = Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if s.Count() != n || s.Index().Len() != n {
		t.Fatalf("count %d, index %d, want %d", s.Count(), s.Index().Len(), n)
	}
	for i, w := range want {
		got, ok := s.Index().Get(w.ID)
		if !ok || *got != w {
			t.Fatalf("record %d: got %+v, want %+v", i, got, w)
		}
		m := s.Index().Match(w.Workspace, w.EventType, w.WorkflowID, nil)
		found := false
		for _, x := range m {
			found = found || x.ID == w.ID
		}
		if !found {
			t.Fatalf("record %d not matched by its own key: %d matches", i, len(m))
		}
	}
	// The released file pages fault back in: a delete reads and writes them.
	if err := s.Delete(t.Context(), want[0].Workspace, want[0].ID); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.Index().Get(want[0].ID); ok || s.Count() != n-1 {
		t.Fatalf("after delete and reopen: count %d, deleted one still indexed: %v", s.Count(), ok)
	}
}
