package registry

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/webhookd/webhookd/events"
)

// FuzzJournalEntry: whatever bytes arrive through a journal, applying them
// never fails or panics, and anything applied passes the API's rules.
func FuzzJournalEntry(f *testing.F) {
	good, err := New("acme", Input{URL: "https://example.com/h", EventType: string(events.WorkflowRunCompleted)}, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	v, _ := json.Marshal(good)
	f.Add(good.ID, v)
	f.Add(good.ID, []byte(`{"id":"`+good.ID+`","workspace":"acme","url":"http://169.254.169.254/","eventType":"workflowRun.failed","secret":"whsec_x"}`))
	f.Add("wh_00000000000000000000000000", []byte(`{"id":"wh_00000000000000000000000000","secret":"enc:v1:abcd:AAAA"}`))
	f.Add("", []byte("{}"))
	f.Add(good.ID, []byte("null"))
	s, err := Open(Config{Path: filepath.Join(f.TempDir(), "fuzz.db")})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	rev := uint64(0)
	f.Fuzz(func(t *testing.T, id string, value []byte) {
		rev++
		refused, err := s.ApplyChanges([]Change{{ID: id, Value: value, Revision: rev}})
		if err != nil {
			t.Fatalf("applying a journal entry failed: %v", err)
		}
		if w, ok := s.Index().Get(id); ok {
			if len(refused) > 0 {
				t.Fatalf("refused (%v) yet indexed", refused[0])
			}
			if err := s.validator.validWebhook(w); err != nil {
				t.Fatalf("an invalid webhook was applied: %v", err)
			}
		}
		rev++
		if _, err := s.ApplyChanges([]Change{{ID: id, Revision: rev}}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestEntryRules: the rules a journal entry is held to, one field at a
// time, on an otherwise valid webhook.
func TestEntryRules(t *testing.T) {
	base, err := New("acme", Input{URL: "https://example.com/h", EventType: string(events.WorkflowRunCompleted)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		mut  func(*Webhook)
		ok   bool
	}{
		{"valid", func(*Webhook) {}, true},
		{"workspace with a space is fine", func(w *Webhook) { w.Workspace = "acme corp" }, true},
		{"disabled with a reason", func(w *Webhook) { w.Disabled, w.DisabledReason = true, DisabledGone }, true},
		{"short id", func(w *Webhook) { w.ID = "wh_123" }, false},
		{"id outside the alphabet", func(w *Webhook) { w.ID = "wh_" + "uuuuuuuuuuuuuuuuuuuuuuuuuu" }, false},
		{"no workspace", func(w *Webhook) { w.Workspace = "" }, false},
		{"control character in workspace", func(w *Webhook) { w.Workspace = "ac\nme" }, false},
		{"private URL", func(w *Webhook) { w.URL = "http://10.0.0.1/" }, false},
		{"bad event type", func(w *Webhook) { w.EventType = "nope" }, false},
		{"secret too short", func(w *Webhook) { w.Secret = "whsec_AAAA" }, false},
		{"secret without prefix", func(w *Webhook) { w.Secret = base.Secret[len("whsec_"):] }, false},
		{"no creation time", func(w *Webhook) { w.CreatedAt = time.Time{} }, false},
		{"disabled without a reason", func(w *Webhook) { w.Disabled = true }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := base
			tc.mut(&w)
			if err := (Validator{}).validWebhook(&w); (err == nil) != tc.ok {
				t.Fatalf("validWebhook = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
