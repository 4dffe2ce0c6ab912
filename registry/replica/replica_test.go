package replica

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
)

// instance is one webhookd's registry: its own bbolt file, its own NATS
// connection, a Replica running until stop.
type instance struct {
	store *registry.Store
	rep   *Replica
	stop  func()
}

func openStore(t *testing.T, path string) *registry.Store {
	t.Helper()
	s, err := registry.Open(registry.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startInstance(t *testing.T, ns *server.Server, store *registry.Store) *instance {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := New(Config{JetStream: js, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	store.UseJournal(rep)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := rep.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	in := &instance{store: store, rep: rep}
	in.stop = sync.OnceFunc(func() { cancel(); wg.Wait(); nc.Close() })
	t.Cleanup(in.stop)
	waitFor(t, "initial sync", func() bool { return rep.Ready() == nil })
	return in
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newHook(t *testing.T, ws, workflow string) registry.Webhook {
	t.Helper()
	w, err := registry.New(ws, registry.Input{URL: "https://example.com/h", EventType: string(events.WorkflowRunFailed),
		WorkflowID: workflow}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func has(s *registry.Store, id string) bool { _, ok := s.Index().Get(id); return ok }

func TestTwoInstancesShareTheRegistry(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	a := startInstance(t, ns, openStore(t, filepath.Join(dir, "a.db")))
	b := startInstance(t, ns, openStore(t, filepath.Join(dir, "b.db")))
	ctx := t.Context()

	w := newHook(t, "acme", "wf-1")
	if err := a.store.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	if !has(a.store, w.ID) {
		t.Fatal("Create returned before the writer's own index had the webhook")
	}
	waitFor(t, "the other instance to match the new webhook", func() bool {
		m := b.store.Index().Match("acme", events.WorkflowRunFailed, "wf-1", nil)
		return len(m) == 1 && m[0].ID == w.ID && m[0].Secret == w.Secret
	})
	if got, err := b.store.Get(ctx, "acme", w.ID); err != nil || got.URL != w.URL {
		t.Fatalf("b's bbolt copy: %+v, %v", got, err)
	}

	// Only the owning workspace may delete, whichever instance it asks.
	if err := b.store.Delete(ctx, "other", w.ID); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("delete from another workspace: %v", err)
	}
	if err := b.store.Delete(ctx, "acme", w.ID); err != nil {
		t.Fatal(err)
	}
	if has(b.store, w.ID) {
		t.Fatal("Delete returned before the deleting instance dropped the webhook")
	}
	waitFor(t, "the writer to drop the deleted webhook", func() bool { return !has(a.store, w.ID) })
	if a.store.Count() != 0 || b.store.Count() != 0 {
		t.Fatalf("counts after delete: %d, %d", a.store.Count(), b.store.Count())
	}
}

func TestFirstSyncPublishesAndRestartResumes(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	// An instance that registered subscriptions before replication existed.
	aPath := filepath.Join(dir, "a.db")
	old := openStore(t, aPath)
	legacy := []registry.Webhook{newHook(t, "acme", ""), newHook(t, "acme", "wf-2")}
	for _, w := range legacy {
		if err := old.Create(t.Context(), w); err != nil {
			t.Fatal(err)
		}
	}
	a := startInstance(t, ns, old)
	bPath := filepath.Join(dir, "b.db")
	b := startInstance(t, ns, openStore(t, bPath))
	for _, w := range legacy {
		waitFor(t, "a pre-existing subscription to reach the new instance", func() bool { return has(b.store, w.ID) })
	}

	// b goes away; meanwhile one subscription is added and one removed.
	b.stop()
	if err := b.store.Close(); err != nil {
		t.Fatal(err)
	}
	added := newHook(t, "acme", "wf-3")
	if err := a.store.Create(t.Context(), added); err != nil {
		t.Fatal(err)
	}
	if err := a.store.Delete(t.Context(), "acme", legacy[0].ID); err != nil {
		t.Fatal(err)
	}
	reopened := openStore(t, bPath)
	rev, err := reopened.JournalRevision()
	if err != nil || rev == 0 {
		t.Fatalf("b recorded no resume point: %d, %v", rev, err)
	}
	b = startInstance(t, ns, reopened)
	if !has(b.store, added.ID) || has(b.store, legacy[0].ID) || !has(b.store, legacy[1].ID) {
		t.Fatalf("after catching up: added %v, deleted %v, kept %v",
			has(b.store, added.ID), has(b.store, legacy[0].ID), has(b.store, legacy[1].ID))
	}
	if b.store.Count() != 2 {
		t.Fatalf("count %d, want 2", b.store.Count())
	}
}

func TestLookupAndUnavailable(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	a := startInstance(t, ns, openStore(t, filepath.Join(dir, "a.db")))

	// A Replica that has not reached its bucket refuses writes.
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	cold := openStore(t, filepath.Join(dir, "c.db"))
	rep, err := New(Config{JetStream: js, Store: cold})
	if err != nil {
		t.Fatal(err)
	}
	cold.UseJournal(rep)
	if err := cold.Create(t.Context(), newHook(t, "acme", "")); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("write before Run: %v", err)
	}

	// Lookup finds what the watch has not brought yet, and applies it.
	w := newHook(t, "acme", "wf-9")
	if err := a.store.Create(t.Context(), w); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), "WEBHOOKD_REGISTRY")
	if err != nil {
		t.Fatal(err)
	}
	rep.kv.Store(&kv)
	got, ok, err := rep.Lookup(t.Context(), w.ID)
	if err != nil || !ok || got.ID != w.ID || !has(cold, w.ID) {
		t.Fatalf("lookup: %+v %v %v", got, ok, err)
	}
	if rev, _ := cold.JournalRevision(); rev != 0 {
		t.Fatalf("a lookup moved the resume point to %d", rev)
	}
	if _, ok, err := rep.Lookup(t.Context(), "wh_nonexistent"); ok || err != nil {
		t.Fatalf("lookup of an unknown id: %v %v", ok, err)
	}

	// With no watch running, writes still complete: after echoWait they
	// apply their own change.
	mine := newHook(t, "acme", "wf-10")
	start := time.Now()
	if err := cold.Create(t.Context(), mine); err != nil || !has(cold, mine.ID) {
		t.Fatalf("create without a watch: %v, indexed %v", err, has(cold, mine.ID))
	}
	if took := time.Since(start); took < echoWait {
		t.Fatalf("create returned after %s, before echoWait, with no watch to bring the change", took)
	}
	waitFor(t, "the running instance to get the registration", func() bool { return has(a.store, mine.ID) })
	if err := cold.Delete(t.Context(), "acme", mine.ID); err != nil || has(cold, mine.ID) {
		t.Fatalf("delete without a watch: %v, indexed %v", err, has(cold, mine.ID))
	}
	waitFor(t, "the running instance to drop it", func() bool { return !has(a.store, mine.ID) })
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without JetStream and Store succeeded")
	}
}

// TestLaggingWatchCannotResurrect: a watch that is behind a local deletion
// passes over the webhook's creation instead of bringing it back, and
// still advances the resume point.
func TestLaggingWatchCannotResurrect(t *testing.T) {
	ns := natstest.JetStream(t)
	a := startInstance(t, ns, openStore(t, filepath.Join(t.TempDir(), "a.db")))
	w := newHook(t, "acme", "")
	value, err := a.store.Encode(w)
	if err != nil {
		t.Fatal(err)
	}
	a.rep.mu.Lock()
	a.rep.deleting[w.ID] = struct{}{}
	a.rep.mu.Unlock()
	if err := a.rep.apply([]registry.Change{{ID: w.ID, Value: value, Revision: 1000}}); err != nil {
		t.Fatal(err)
	}
	if has(a.store, w.ID) {
		t.Fatal("the stale creation of a deleted webhook was applied")
	}
	if rev, _ := a.store.JournalRevision(); rev != 1000 {
		t.Fatalf("resume point %d, want 1000", rev)
	}
	if err := a.rep.apply([]registry.Change{{ID: w.ID, Revision: 1001}}); err != nil {
		t.Fatal(err)
	}
	a.rep.mu.Lock()
	_, still := a.rep.deleting[w.ID]
	a.rep.mu.Unlock()
	if still {
		t.Fatal("the deletion passed by but the id is still held back")
	}
}
