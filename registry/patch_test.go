package registry_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/replica"
)

func ptr[T any](v T) *T { return &v }

// openPatchStore opens a Store in the test's temp dir, closed at the end.
func openPatchStore(t *testing.T, name string) *registry.Store {
	t.Helper()
	s, err := registry.Open(registry.Config{Path: filepath.Join(t.TempDir(), name)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func newWebhook(t *testing.T, ws, eventType, workflow string) registry.Webhook {
	t.Helper()
	w, err := registry.New(ws, registry.Input{URL: "https://example.com/" + ws, EventType: eventType, WorkflowID: workflow}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// matchedUnder reports whether Match finds id under (ws, type, workflow).
func matchedUnder(s *registry.Store, ws string, et events.Type, workflow, id string) bool {
	for _, m := range s.Index().Match(ws, et, workflow, nil) {
		if m.ID == id {
			return true
		}
	}
	return false
}

// TestPatch walks one webhook through a sequence of patches on a local
// Store: what each returns, what it changes, what bbolt and the match
// index hold afterwards, and the errors.
func TestPatch(t *testing.T) {
	ctx := t.Context()
	s := openPatchStore(t, "r.db")
	w := newWebhook(t, "acme", string(events.WorkflowRunCompleted), "WF-1")
	if err := s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		ws, id  string
		patch   registry.Patch
		err     error    // wrapped sentinel; nil for success
		fields  []string // *ValidationError fields, for validation failures
		changed []string
		// the webhook afterwards
		url, eventType, workflow, description string
		disabled                              bool
		reason                                string
	}{
		{name: "empty patch", ws: "acme", patch: registry.Patch{}, err: registry.ErrEmptyPatch,
			url: w.URL, eventType: "workflowRun.completed", workflow: "WF-1"},
		{name: "other workspace", ws: "other", patch: registry.Patch{Description: ptr("x")}, err: registry.ErrNotFound,
			url: w.URL, eventType: "workflowRun.completed", workflow: "WF-1"},
		{name: "unknown id", ws: "acme", id: "wh_00000000000000000000000000", patch: registry.Patch{Description: ptr("x")},
			err: registry.ErrNotFound, url: w.URL, eventType: "workflowRun.completed", workflow: "WF-1"},
		{name: "every field invalid", ws: "acme", patch: registry.Patch{URL: ptr("http://169.254.169.254/"), EventType: ptr("nope"),
			WorkflowID: ptr("a\nb"), Description: ptr(strings.Repeat("d", registry.MaxDescriptionLen+1))},
			fields: []string{"url", "eventType", "workflowId", "description"},
			url:    w.URL, eventType: "workflowRun.completed", workflow: "WF-1"},
		{name: "empty url and event type", ws: "acme", patch: registry.Patch{URL: ptr(""), EventType: ptr("")},
			fields: []string{"url", "eventType"}, url: w.URL, eventType: "workflowRun.completed", workflow: "WF-1"},
		{name: "description", ws: "acme", patch: registry.Patch{Description: ptr("Billing — prod ✓")},
			changed: []string{"description"}, url: w.URL, eventType: "workflowRun.completed", workflow: "WF-1",
			description: "Billing — prod ✓"},
		{name: "same values change nothing", ws: "acme", patch: registry.Patch{URL: ptr(w.URL), WorkflowID: ptr("WF-1"),
			Enabled: ptr(true)}, url: w.URL, eventType: "workflowRun.completed", workflow: "WF-1", description: "Billing — prod ✓"},
		{name: "url, type and workflow", ws: "acme", patch: registry.Patch{URL: ptr("https://new.example.com/in"),
			EventType: ptr("workflowRun.failed"), WorkflowID: ptr("WF-2")},
			changed: []string{"url", "eventType", "workflowId"}, url: "https://new.example.com/in", eventType: "workflowRun.failed",
			workflow: "WF-2", description: "Billing — prod ✓"},
		{name: "disable", ws: "acme", patch: registry.Patch{Enabled: ptr(false)}, changed: []string{"enabled"},
			url: "https://new.example.com/in", eventType: "workflowRun.failed", workflow: "WF-2", description: "Billing — prod ✓",
			disabled: true, reason: registry.DisabledManual},
		{name: "every workflow while disabled", ws: "acme", patch: registry.Patch{WorkflowID: ptr(""), Enabled: ptr(false)},
			changed: []string{"workflowId"}, url: "https://new.example.com/in", eventType: "workflowRun.failed",
			description: "Billing — prod ✓", disabled: true, reason: registry.DisabledManual},
		{name: "enable and clear the description", ws: "acme", patch: registry.Patch{Enabled: ptr(true), Description: ptr("")},
			changed: []string{"description", "enabled"}, url: "https://new.example.com/in", eventType: "workflowRun.failed"},
	}
	for _, st := range steps {
		id := st.id
		if id == "" {
			id = w.ID
		}
		got, changed, err := s.Patch(ctx, st.ws, id, st.patch)
		var ve *registry.ValidationError
		switch {
		case st.err != nil:
			if !errors.Is(err, st.err) {
				t.Fatalf("%s: err = %v, want %v", st.name, err, st.err)
			}
		case st.fields != nil:
			if !errors.As(err, &ve) {
				t.Fatalf("%s: err = %v, want a *ValidationError", st.name, err)
			}
			for _, f := range st.fields {
				if ve.Fields[f] == "" {
					t.Fatalf("%s: %v does not name %s", st.name, ve.Fields, f)
				}
			}
			if len(ve.Fields) != len(st.fields) {
				t.Fatalf("%s: fields %v, want exactly %v", st.name, ve.Fields, st.fields)
			}
		case err != nil:
			t.Fatalf("%s: %v", st.name, err)
		default:
			if !slices.Equal(changed, st.changed) {
				t.Fatalf("%s: changed %v, want %v", st.name, changed, st.changed)
			}
			if got.ID != w.ID || got.Secret != w.Secret || !got.CreatedAt.Equal(w.CreatedAt) || got.Workspace != "acme" {
				t.Fatalf("%s: id, secret, workspace or creation time changed: %+v", st.name, got)
			}
		}
		stored, err := s.Get(ctx, "acme", w.ID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.URL != st.url || string(stored.EventType) != st.eventType || stored.WorkflowID != st.workflow ||
			stored.Description != st.description || stored.Disabled != st.disabled || stored.DisabledReason != st.reason {
			t.Fatalf("%s: stored %+v", st.name, stored)
		}
		if stored.Secret != w.Secret {
			t.Fatalf("%s: the secret changed", st.name)
		}
		if st.disabled == stored.DisabledAt.IsZero() {
			t.Fatalf("%s: disabledAt %v with disabled %v", st.name, stored.DisabledAt, st.disabled)
		}
		ixw, ok := s.Index().Get(w.ID)
		if !ok || *ixw != stored {
			t.Fatalf("%s: index holds %+v, bbolt %+v", st.name, ixw, stored)
		}
		if matchedUnder(s, "acme", events.Type(st.eventType), st.workflow, w.ID) == st.disabled {
			t.Fatalf("%s: matched under its own key: %v, disabled %v", st.name, !st.disabled, st.disabled)
		}
	}
	if s.Count() != 1 {
		t.Fatalf("count %d after patches", s.Count())
	}
}

// TestPatchMovesTheMatchKey: after a change of event type or workflow,
// Match finds the webhook under its new key and never under the old one,
// and the other webhooks stay where they were.
func TestPatchMovesTheMatchKey(t *testing.T) {
	ctx := t.Context()
	type key struct {
		et events.Type
		wf string
	}
	tests := []struct {
		name     string
		patch    registry.Patch
		from, to key
	}{
		{"event type", registry.Patch{EventType: ptr("workflowRun.failed")},
			key{events.WorkflowRunCompleted, "WF-1"}, key{events.WorkflowRunFailed, "WF-1"}},
		{"workflow", registry.Patch{WorkflowID: ptr("WF-2")},
			key{events.WorkflowRunCompleted, "WF-1"}, key{events.WorkflowRunCompleted, "WF-2"}},
		{"to every workflow", registry.Patch{WorkflowID: ptr("")},
			key{events.WorkflowRunCompleted, "WF-1"}, key{events.WorkflowRunCompleted, ""}},
		{"both", registry.Patch{EventType: ptr("workflowCreditLimit.reached"), WorkflowID: ptr("")},
			key{events.WorkflowRunCompleted, "WF-1"}, key{events.WorkflowCreditLimitReached, ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openPatchStore(t, "r.db")
			w := newWebhook(t, "acme", string(tc.from.et), tc.from.wf)
			neighbour := newWebhook(t, "acme", string(tc.from.et), tc.from.wf)
			for _, h := range []registry.Webhook{w, neighbour} {
				if err := s.Create(ctx, h); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := s.Patch(ctx, "acme", w.ID, tc.patch); err != nil {
				t.Fatal(err)
			}
			// An event of the new key with some workflow: Match returns
			// the every-workflow key's webhooks and that workflow's.
			probe := tc.to.wf
			if probe == "" {
				probe = "WF-anything"
			}
			if !matchedUnder(s, "acme", tc.to.et, probe, w.ID) {
				t.Fatal("not matched under the new key")
			}
			if tc.from.et != tc.to.et || tc.to.wf != "" {
				if matchedUnder(s, "acme", tc.from.et, tc.from.wf, w.ID) {
					t.Fatal("still matched under the old key")
				}
			}
			if !matchedUnder(s, "acme", tc.from.et, tc.from.wf, neighbour.ID) {
				t.Fatal("the neighbour left the old key")
			}
			if got := s.Index().Match("acme", tc.to.et, probe, nil); len(got) != 1+boolInt(tc.from == tc.to) {
				t.Fatalf("new key matches %d webhooks", len(got))
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestPatchKeepsAStoredURLTheRulesNowRefuse: a patch is held to the rules
// of every journal entry as a whole, so a webhook whose stored URL the
// SSRF policy refuses now cannot be patched without fixing the URL (an
// entry written with it would be applied as a deletion everywhere).
func TestPatchKeepsAStoredURLTheRulesNowRefuse(t *testing.T) {
	ctx := t.Context()
	s := openPatchStore(t, "r.db")
	w := newWebhook(t, "acme", "workflowRun.started", "")
	w.URL = "http://10.1.2.3/hook" // stored under a laxer policy
	if err := s.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.Patch(ctx, "acme", w.ID, registry.Patch{Description: ptr("x")})
	var ve *registry.ValidationError
	if !errors.As(err, &ve) || ve.Fields["url"] == "" {
		t.Fatalf("patch of a webhook with a refused URL: %v", err)
	}
	if got, _, err := s.Patch(ctx, "acme", w.ID, registry.Patch{Description: ptr("x"), URL: ptr("https://ok.example.com/")}); err != nil ||
		got.URL != "https://ok.example.com/" || got.Description != "x" {
		t.Fatalf("patch fixing the URL: %+v %v", got, err)
	}
}

func TestCheckDescription(t *testing.T) {
	tests := []struct {
		d  string
		ok bool
	}{
		{"", true},
		{"Billing webhook (prod)", true},
		{"Überweisung — 支払い ✓ 🚀", true},
		{strings.Repeat("é", registry.MaxDescriptionLen), true},
		{strings.Repeat("é", registry.MaxDescriptionLen+1), false},
		{"two\nlines", false},
		{"tab\there", false},
		{"nul\x00", false},
		{"bidi \u202e override", false},
		{"bad \xff utf-8", false},
		{"zero\u200bwidth", false},
	}
	for _, tc := range tests {
		if msg := registry.CheckDescription(tc.d); (msg == "") != tc.ok {
			t.Errorf("CheckDescription(%q) = %q, want ok=%v", tc.d, msg, tc.ok)
		}
	}
}

// sharedInstance is one instance of a shared registry on a real NATS
// server: its own bbolt file and its own replica.
type sharedInstance struct {
	store *registry.Store
	kv    jetstream.KeyValue
}

func startShared(t *testing.T, url, name string) sharedInstance {
	t.Helper()
	store := openPatchStore(t, name)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := replica.New(replica.Config{JetStream: js, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	store.UseJournal(rep)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := rep.Run(ctx); err != nil {
			t.Errorf("replica: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait(); nc.Close() }) // before the store closes
	waitUntil(t, "the replica's first sync", func() bool { return rep.Ready() == nil })
	kv, err := js.KeyValue(t.Context(), "WEBHOOKD_REGISTRY")
	if err != nil {
		t.Fatal(err)
	}
	return sharedInstance{store: store, kv: kv}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPatchSharedRegistry: with the shared registry (a real replica on a
// real NATS server), a patch on one instance moves the webhook in the
// other's index too; concurrent patches of different fields from both
// instances all survive (compare-and-swap, no lost update) and every copy
// converges on the bucket's; a patch after a deletion brings nothing back.
func TestPatchSharedRegistry(t *testing.T) {
	ns := natstest.JetStream(t)
	a := startShared(t, ns.ClientURL(), "a.db")
	b := startShared(t, ns.ClientURL(), "b.db")
	ctx := t.Context()
	w := newWebhook(t, "acme", "workflowRun.completed", "WF-1")
	if err := a.store.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b to have the webhook", func() bool { _, ok := b.store.Index().Get(w.ID); return ok })

	got, changed, err := b.store.Patch(ctx, "acme", w.ID, registry.Patch{EventType: ptr("workflowRun.failed"), WorkflowID: ptr("WF-9")})
	if err != nil || !slices.Equal(changed, []string{"eventType", "workflowId"}) || got.Secret != w.Secret {
		t.Fatalf("patch on b: %+v %v %v", got, changed, err)
	}
	// The writer's index has it on return; the other instance's moments later.
	if !matchedUnder(b.store, "acme", events.WorkflowRunFailed, "WF-9", w.ID) {
		t.Fatal("Patch returned before the writer's index had the change")
	}
	for name, in := range map[string]sharedInstance{"a": a, "b": b} {
		waitUntil(t, name+" to match under the new key", func() bool {
			return matchedUnder(in.store, "acme", events.WorkflowRunFailed, "WF-9", w.ID) &&
				!matchedUnder(in.store, "acme", events.WorkflowRunCompleted, "WF-1", w.ID)
		})
	}

	// Concurrent writers, each its own field: none undoes another.
	var wg sync.WaitGroup
	const rounds = 8
	for i, in := range []sharedInstance{a, b, a, b} {
		wg.Go(func() {
			for r := range rounds {
				var p registry.Patch
				switch i {
				case 0:
					p.Description = ptr(fmt.Sprintf("from a, round %d", r))
				case 1:
					p.URL = ptr(fmt.Sprintf("https://b.example.com/%d", r))
				case 2:
					p.Enabled = ptr(r%2 == 1) // ends enabled
				case 3:
					p.WorkflowID = ptr(fmt.Sprintf("WF-%d", r))
				}
				if _, _, err := in.store.Patch(ctx, "acme", w.ID, p); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	e, err := a.kv.Get(ctx, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	final := string(e.Value()) // no Sealer: a Store encodes a webhook to exactly these bytes
	last := fmt.Sprint(rounds - 1)
	for name, in := range map[string]sharedInstance{"a": a, "b": b} {
		waitUntil(t, name+" to converge on the bucket's value", func() bool {
			cur, ok := in.store.Index().Get(w.ID)
			if !ok {
				return false
			}
			v, err := in.store.Encode(*cur)
			return err == nil && string(v) == final
		})
		cur, err := in.store.Get(ctx, "acme", w.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Description != "from a, round "+last || cur.URL != "https://b.example.com/"+last || cur.Disabled ||
			cur.WorkflowID != "WF-"+last || cur.EventType != events.WorkflowRunFailed || cur.Secret != w.Secret {
			t.Fatalf("%s: a concurrent patch was lost: %+v", name, cur)
		}
		if !matchedUnder(in.store, "acme", events.WorkflowRunFailed, "WF-"+last, w.ID) {
			t.Fatalf("%s: not matched under the final key", name)
		}
	}

	if err := a.store.Delete(ctx, "acme", w.ID); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b to drop the webhook", func() bool { _, ok := b.store.Index().Get(w.ID); return !ok })
	if _, _, err := b.store.Patch(ctx, "acme", w.ID, registry.Patch{Description: ptr("back?")}); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("patch after delete: %v", err)
	}
	if _, err := a.kv.Get(ctx, w.ID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the bucket has the deleted webhook again: %v", err)
	}
}

// TestJournalEntryDescriptionRule: an entry arriving through a journal is
// held to the description rule like the API's input, and one breaking it
// is refused (applied as a deletion) rather than shown.
func TestJournalEntryDescriptionRule(t *testing.T) {
	s := openPatchStore(t, "r.db")
	tests := []struct {
		name        string
		description string
		refused     bool
	}{
		{"none", "", false},
		{"printable", "Payments, prod — owner: team-billing", false},
		{"longest", strings.Repeat("x", registry.MaxDescriptionLen), false},
		{"too long", strings.Repeat("x", registry.MaxDescriptionLen+1), true},
		{"line break", "a\nb", true},
		{"escape sequence", "\x1b[31mred", true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWebhook(t, "acme", "workflowRun.started", "")
			w.Description = tc.description
			v, err := s.Encode(w)
			if err != nil {
				t.Fatal(err)
			}
			refused, err := s.ApplyChanges([]registry.Change{{ID: w.ID, Value: v, Revision: uint64(i + 1)}})
			if err != nil {
				t.Fatal(err)
			}
			_, indexed := s.Index().Get(w.ID)
			if (len(refused) == 1) != tc.refused || indexed == tc.refused {
				t.Fatalf("refused %v, indexed %v; want refused %v", refused, indexed, tc.refused)
			}
			if tc.refused && refused[0].Reason != registry.RefusedInvalid {
				t.Fatalf("reason %q", refused[0].Reason)
			}
		})
	}
}
