package replica

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
)

// sealedWithKey is the id of the key a bucket entry's secret is sealed
// with; "" when it is not sealed.
func sealedWithKey(e jetstream.KeyValueEntry) string {
	_, rest, ok := strings.Cut(string(e.Value()), `"secret":"enc:v1:`)
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, ":")
	return id
}

// waitSealedWith waits for every listed entry and the marker to say the
// bucket is sealed with keyID.
func waitSealedWith(t *testing.T, ns *server.Server, keyID string, hooks []registry.Webhook) {
	t.Helper()
	kv := rawKV(t, ns)
	waitFor(t, "the bucket to be sealed with "+keyID, func() bool {
		m, err := kv.Get(t.Context(), markerKey)
		if err != nil {
			return false
		}
		if mk := parseMarker(string(m.Value())); mk.migrating || mk.keyID != keyID {
			return false
		}
		for _, w := range hooks {
			e, err := kv.Get(t.Context(), w.ID)
			if err != nil || sealedWithKey(e) != keyID {
				return false
			}
		}
		return true
	})
}

// createSealed registers n webhooks through a fresh instance holding only
// key, and stops it.
func createSealed(t *testing.T, ns *server.Server, path string, key []byte, n int) []registry.Webhook {
	t.Helper()
	a := startWith(t, ns, sealedStore(t, path, key), nil, nil)
	waitFor(t, "the writer ready", func() bool { return a.rep.Ready() == nil })
	hooks := make([]registry.Webhook, n)
	for i := range hooks {
		hooks[i] = newHook(t, "acme", "")
		if err := a.store.Create(t.Context(), hooks[i]); err != nil {
			t.Fatal(err)
		}
	}
	waitSealedWith(t, ns, a.store.SealingKeyID(), hooks)
	a.stop()
	if err := a.store.Close(); err != nil {
		t.Fatal(err)
	}
	return hooks
}

// readsAll checks that a fresh instance holding only key becomes ready
// with every webhook.
func readsAll(t *testing.T, ns *server.Server, key []byte, hooks []registry.Webhook) {
	t.Helper()
	c := startWith(t, ns, sealedStore(t, filepath.Join(t.TempDir(), "c.db"), key), nil, nil)
	waitFor(t, "an instance with only the new key ready", func() bool { return c.rep.Ready() == nil })
	for _, w := range hooks {
		if got, ok := c.store.Index().Get(w.ID); !ok || got.Secret != w.Secret {
			t.Fatalf("the new-key instance lacks %s or its secret differs", w.ID)
		}
	}
}

// TestRotationFromAnEmptyDataDir: a rotation started on an instance with
// nothing to re-seal at Open (an empty data dir) still re-seals the
// bucket, because its marker names another key.
func TestRotationFromAnEmptyDataDir(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	k1, k2 := newKey(t), newKey(t)
	hooks := createSealed(t, ns, filepath.Join(dir, "a.db"), k1, 20)

	n := startWith(t, ns, sealedStore(t, filepath.Join(dir, "n.db"), k2, k1), nil, nil)
	if got := n.store.ResealedAtOpen(); got != 0 {
		t.Fatalf("an empty data dir re-sealed %d secrets at Open", got)
	}
	waitSealedWith(t, ns, n.store.SealingKeyID(), hooks)
	readsAll(t, ns, k2, hooks)
}

// TestRotationResumesAfterACrash: an instance that stopped half way
// through re-sealing the bucket (its own copy already re-sealed, so its
// Open re-seals nothing) finishes the pass after the restart.
func TestRotationResumesAfterACrash(t *testing.T) {
	ns := natstest.JetStream(t)
	aPath := filepath.Join(t.TempDir(), "a.db")
	k1, k2 := newKey(t), newKey(t)
	hooks := createSealed(t, ns, aPath, k1, 20)

	// The rotated start that crashed: Open re-sealed the copy, then the
	// pass rewrote half the bucket's entries and died before the marker.
	s := sealedStore(t, aPath, k2, k1)
	if s.ResealedAtOpen() != len(hooks) {
		t.Fatalf("Open re-sealed %d secrets, want %d", s.ResealedAtOpen(), len(hooks))
	}
	kv := rawKV(t, ns)
	for _, w := range hooks[:len(hooks)/2] {
		e, err := kv.Get(t.Context(), w.ID)
		if err != nil {
			t.Fatal(err)
		}
		out, changed, err := s.Reseal(e.Value())
		if err != nil || !changed {
			t.Fatalf("reseal %s: changed %v, %v", w.ID, changed, err)
		}
		if _, err := kv.Update(t.Context(), w.ID, out, e.Revision()); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	a := startWith(t, ns, sealedStore(t, aPath, k2, k1), nil, nil)
	if got := a.store.ResealedAtOpen(); got != 0 {
		t.Fatalf("the restart re-sealed %d secrets at Open, want 0 (the copy was re-sealed before the crash)", got)
	}
	waitSealedWith(t, ns, a.store.SealingKeyID(), hooks)
	readsAll(t, ns, k2, hooks)
}

// TestLateInstanceDoesNotUndoRotation: an instance still holding the old
// key first (OLD,NEW) that restarts after the bucket was re-sealed with
// NEW, its copy re-sealed back to OLD at Open, leaves the bucket on NEW.
func TestLateInstanceDoesNotUndoRotation(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	k1, k2 := newKey(t), newKey(t)
	aPath, lPath := filepath.Join(dir, "a.db"), filepath.Join(dir, "l.db")
	hooks := createSealed(t, ns, aPath, k1, 10)
	restartLate := func() *instance {
		l := startWith(t, ns, sealedStore(t, lPath, k1, k2), nil, nil)
		waitFor(t, "the late instance ready", func() bool { return l.rep.Ready() == nil })
		return l
	}
	stop := func(in *instance) {
		in.stop()
		if err := in.store.Close(); err != nil {
			t.Fatal(err)
		}
	}
	stop(restartLate()) // its copy has the entries sealed with k1

	a := startWith(t, ns, sealedStore(t, aPath, k2, k1), nil, nil)
	waitSealedWith(t, ns, a.store.SealingKeyID(), hooks)
	newID := a.store.SealingKeyID()

	l := restartLate() // the watch brings the entries sealed with k2
	stop(l)
	l = restartLate()
	if l.store.ResealedAtOpen() == 0 {
		t.Fatal("the late instance's Open re-sealed nothing; the test needs it to")
	}
	if why, err := l.rep.resealReason(); why != "" || err != nil {
		t.Fatalf("the late instance would re-seal the bucket: %q, %v", why, err)
	}
	kv := rawKV(t, ns)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		for _, w := range hooks {
			e, err := kv.Get(t.Context(), w.ID)
			if err != nil || sealedWithKey(e) != newID {
				t.Fatalf("entry %s was re-sealed back: key %q, %v", w.ID, sealedWithKey(e), err)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	m, err := kv.Get(t.Context(), markerKey)
	if err != nil || parseMarker(string(m.Value())).keyID != newID {
		t.Fatalf("marker %q (%v), want it to name %s", m.Value(), err, newID)
	}
}
