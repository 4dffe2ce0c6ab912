package replica

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
)

// TestSyncWaitsForTheAbsenceDrop: an instance back from longer than half
// the tombstone grace rebuilds its copy from the bucket; Sync, which
// fan-out's join gate waits on, does not return before the webhooks
// deleted meanwhile (their markers compacted away) are dropped, so no
// event fans out to them. Sync is called from the start, as the join gate
// does, so it is waiting when the watch reaches the bucket's end.
func TestSyncWaitsForTheAbsenceDrop(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	a := startWith(t, ns, openStore(t, filepath.Join(dir, "a.db")), nil,
		func(c *Config) { c.TombstoneGrace, c.CompactInterval = time.Nanosecond, -1 })
	waitFor(t, "a in sync", func() bool { return a.rep.Ready() == nil })
	bPath := filepath.Join(dir, "b.db")
	bCfg := func(c *Config) { c.TombstoneGrace, c.CompactInterval = 2*time.Second, -1 }
	b := startWith(t, ns, openStore(t, bPath), nil, bCfg)
	waitFor(t, "b in sync", func() bool { return b.rep.Ready() == nil })

	gone := make([]registry.Webhook, 300)
	for i := range gone {
		gone[i] = newHook(t, "acme", "")
		if err := a.store.Create(t.Context(), gone[i]); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "b to have them all", func() bool { return b.store.Count() == len(gone) })
	b.stop()
	if err := b.store.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // more than half b's grace

	for _, w := range gone {
		if err := a.store.Delete(t.Context(), "acme", w.ID); err != nil {
			t.Fatal(err)
		}
	}
	kept := newHook(t, "acme", "") // the bucket's last message, so every marker goes
	if err := a.store.Create(t.Context(), kept); err != nil {
		t.Fatal(err)
	}
	if n, err := a.rep.compact(t.Context()); err != nil || n != len(gone) {
		t.Fatalf("compact removed %d markers (%v), want %d", n, err, len(gone))
	}

	b = startWith(t, ns, openStore(t, bPath), nil, bCfg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err := b.rep.Sync(ctx)
		cancel()
		if err == nil {
			break
		}
		if !errors.Is(err, registry.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Sync: %v", err)
		}
	}
	left := 0
	for _, w := range gone {
		if has(b.store, w.ID) {
			left++
		}
	}
	if left > 0 || !has(b.store, kept.ID) {
		t.Fatalf("Sync returned with %d webhooks deleted during the absence still indexed (kept present: %v)", left, has(b.store, kept.ID))
	}
	if err := b.rep.Ready(); err != nil {
		t.Fatalf("ready after Sync: %v", err)
	}
}
