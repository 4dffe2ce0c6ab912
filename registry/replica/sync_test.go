package replica

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
)

// TestSyncSeesEveryAcknowledgedWrite: once Sync returns on one instance,
// every registration another instance acknowledged before it is matched.
func TestSyncSeesEveryAcknowledgedWrite(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	a := startInstance(t, ns, openStore(t, filepath.Join(dir, "a.db")))
	b := startInstance(t, ns, openStore(t, filepath.Join(dir, "b.db")))
	missed := 0
	for range 300 {
		w := newHook(t, "acme", "")
		if err := a.store.Create(t.Context(), w); err != nil {
			t.Fatal(err)
		}
		syncWithin(t, b.rep)
		if !has(b.store, w.ID) {
			missed++
		}
	}
	if missed > 0 {
		t.Fatalf("%d of 300 registrations acknowledged by a were not in b after b's Sync", missed)
	}
}

// TestCreateDeleteRace: thousands of create-then-delete pairs through one
// instance, many at a time, leave nothing on either.
func TestCreateDeleteRace(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	a := startInstance(t, ns, openStore(t, filepath.Join(dir, "a.db")))
	b := startInstance(t, ns, openStore(t, filepath.Join(dir, "b.db")))
	const pairs, clients = 2000, 64
	work := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range work {
				w := newHook(t, "acme", "")
				if err := a.store.Create(t.Context(), w); err != nil {
					t.Error(err)
					return
				}
				if err := a.store.Delete(t.Context(), "acme", w.ID); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range pairs {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	syncWithin(t, a.rep)
	syncWithin(t, b.rep)
	if na, nb := a.store.Count(), b.store.Count(); na != 0 || nb != 0 {
		t.Fatalf("after %d create/delete pairs: a holds %d, b holds %d (want 0, 0)", pairs, na, nb)
	}
}

// TestCompactionAndLongAbsence: delete markers past the grace are removed
// (never the bucket's last message, so Sync still ends), and an instance
// away for longer than half the grace rebuilds its copy, dropping a
// webhook whose deletion it never saw.
func TestCompactionAndLongAbsence(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	quick := func(c *Config) { c.TombstoneGrace, c.CompactInterval = time.Nanosecond, -1 }
	a := startWith(t, ns, openStore(t, filepath.Join(dir, "a.db")), nil, quick)
	waitFor(t, "a in sync", func() bool { return a.rep.Ready() == nil })
	bPath := filepath.Join(dir, "b.db")
	b := startWith(t, ns, openStore(t, bPath), nil, func(c *Config) { c.TombstoneGrace, c.CompactInterval = 2*time.Second, -1 })
	waitFor(t, "b in sync", func() bool { return b.rep.Ready() == nil })

	gone, kept := newHook(t, "acme", ""), newHook(t, "acme", "")
	for _, w := range []registry.Webhook{gone, kept} {
		if err := a.store.Create(t.Context(), w); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "b to have both", func() bool { return has(b.store, gone.ID) && has(b.store, kept.ID) })
	b.stop()
	if err := b.store.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // more than half b's grace

	if err := a.store.Delete(t.Context(), "acme", gone.ID); err != nil {
		t.Fatal(err)
	}
	last := newHook(t, "acme", "")
	if err := a.store.Delete(t.Context(), "acme", kept.ID); err != nil {
		t.Fatal(err)
	}
	// The newest marker (kept's) is the bucket's last message: kept.
	n, err := a.rep.compact(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("compact removed %d markers (%v), want 1 (the last message stays)", n, err)
	}
	if err := a.store.Create(t.Context(), last); err != nil {
		t.Fatal(err)
	}
	if n, err = a.rep.compact(t.Context()); err != nil || n != 1 {
		t.Fatalf("second compact removed %d markers (%v), want 1", n, err)
	}
	syncWithin(t, a.rep)

	b = startWith(t, ns, openStore(t, bPath), nil, func(c *Config) { c.TombstoneGrace, c.CompactInterval = 2*time.Second, -1 })
	waitFor(t, "b back in sync", func() bool { return b.rep.Ready() == nil })
	syncWithin(t, b.rep)
	if has(b.store, gone.ID) || has(b.store, kept.ID) {
		t.Fatalf("b kept a webhook deleted while it was away (gone %v, kept %v)", has(b.store, gone.ID), has(b.store, kept.ID))
	}
	if !has(b.store, last.ID) {
		t.Fatal("b lacks the webhook created while it was away")
	}
}
