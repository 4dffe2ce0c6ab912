package replica

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/webhookd/webhookd/events/natstest"
)

// TestBlockedEntrySurvivesRestart: an entry sealed with a key this
// instance lacks keeps it not ready across a restart on the same data dir,
// even with later entries applied after it, until another instance
// re-seals the entry with a key it has; then it is ready and has the
// webhook.
func TestBlockedEntrySurvivesRestart(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	k1, k2 := newKey(t), newKey(t)
	aPath, bPath := filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db")
	a := startWith(t, ns, sealedStore(t, aPath, k1), nil, nil)
	waitFor(t, "a ready", func() bool { return a.rep.Ready() == nil })
	locked := newHook(t, "acme", "")
	if err := a.store.Create(t.Context(), locked); err != nil {
		t.Fatal(err)
	}

	b := startWith(t, ns, sealedStore(t, bPath, k2), nil, nil)
	names := func(in *instance) bool {
		err := in.rep.Ready()
		return err != nil && strings.Contains(err.Error(), locked.ID)
	}
	waitFor(t, "b to name the entry it cannot open", func() bool { return names(b) })
	// A later entry b can apply, so that the resume point has a reason to
	// move past the locked one: a webhook whose secret b seals itself.
	later := newHook(t, "acme", "")
	v, err := b.store.Encode(later)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rawKV(t, ns).Create(t.Context(), later.ID, v); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to apply the later entry", func() bool { return has(b.store, later.ID) })

	for i := range 2 {
		b.stop()
		if err := b.store.Close(); err != nil {
			t.Fatal(err)
		}
		b = startWith(t, ns, sealedStore(t, bPath, k2), nil, nil)
		waitFor(t, "b to catch up after the restart", func() bool { return b.rep.synced.Load() })
		if !names(b) {
			t.Fatalf("restart %d: b is caught up and reports %v; want not ready, naming %s", i+1, b.rep.Ready(), locked.ID)
		}
		if has(b.store, locked.ID) || !has(b.store, later.ID) {
			t.Fatalf("restart %d: b has the locked webhook %v, the later one %v", i+1, has(b.store, locked.ID), has(b.store, later.ID))
		}
	}

	// a rotates to b's key, which re-seals the bucket.
	a.stop()
	if err := a.store.Close(); err != nil {
		t.Fatal(err)
	}
	a = startWith(t, ns, sealedStore(t, aPath, k2, k1), nil, nil)
	waitFor(t, "b ready once a re-sealed the entry", func() bool { return b.rep.Ready() == nil })
	got, ok := b.store.Index().Get(locked.ID)
	if !ok || got.Secret != locked.Secret {
		t.Fatalf("b lacks %s or its secret differs", locked.ID)
	}
	if n := b.rep.blockedCount(); n != 0 {
		t.Fatalf("%d entries still blocked", n)
	}
	if rev, err := b.store.JournalRevision(); err != nil || rev < b.rep.watched.Load() {
		t.Fatalf("resume point %d (%v), want the watch's %d once nothing is held", rev, err, b.rep.watched.Load())
	}
}
