package replica

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
)

// openMetered opens a Store whose gauges are registered on a fresh
// registry, returned with a reader of webhookd_webhooks_disabled.
func openMetered(t *testing.T, path string) (*registry.Store, func() float64) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := registry.Open(registry.Config{Path: path, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return s, func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "webhookd_webhooks_disabled" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("webhookd_webhooks_disabled is not registered")
		return 0
	}
}

func disabledIn(s *registry.Store, id string) (disabled, ok bool) {
	w, ok := s.Index().Get(id)
	return ok && w.Disabled, ok
}

func matched(s *registry.Store, w registry.Webhook) bool {
	for _, m := range s.Index().Match(w.Workspace, w.EventType, w.WorkflowID, nil) {
		if m.ID == w.ID {
			return true
		}
	}
	return false
}

// TestUpdatesReachEveryInstance: a disable on one instance and an enable
// on the other replace the webhook in both bbolt copies, indexes and
// gauges, a restarted instance catches up with an update it missed, and a
// delete after updates still deletes everywhere.
func TestUpdatesReachEveryInstance(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	aStore, aGauge := openMetered(t, filepath.Join(dir, "a.db"))
	bPath := filepath.Join(dir, "b.db")
	bStore, bGauge := openMetered(t, bPath)
	a := startInstance(t, ns, aStore)
	b := startInstance(t, ns, bStore)
	ctx := t.Context()

	w := newHook(t, "acme", "wf-1")
	if err := a.store.Create(ctx, w); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to have the webhook", func() bool { return has(b.store, w.ID) })

	steps := []struct {
		name     string
		on       *instance
		do       func(s *registry.Store) error
		disabled bool
		reason   string
	}{
		{"disable on a", a, func(s *registry.Store) error {
			_, changed, err := s.Disable(ctx, w.ID, registry.DisabledFailing, time.Now())
			if err == nil && !changed {
				return errors.New("first disable reported no change")
			}
			return err
		}, true, registry.DisabledFailing},
		{"disable again on b", b, func(s *registry.Store) error {
			_, changed, err := s.Disable(ctx, w.ID, registry.DisabledGone, time.Now())
			if err == nil && changed {
				return errors.New("second disable reported a change")
			}
			return err
		}, true, registry.DisabledFailing},
		{"enable on b", b, func(s *registry.Store) error { _, err := s.Enable(ctx, "acme", w.ID); return err }, false, ""},
		{"disable on b", b, func(s *registry.Store) error {
			_, _, err := s.Disable(ctx, w.ID, registry.DisabledGone, time.Now())
			return err
		}, true, registry.DisabledGone},
	}
	for _, st := range steps {
		if err := st.do(st.on.store); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		// The writer has it on return; the other instance within moments.
		if d, _ := disabledIn(st.on.store, w.ID); d != st.disabled {
			t.Fatalf("%s: returned before the writer's index had it", st.name)
		}
		for _, in := range []*instance{a, b} {
			waitFor(t, st.name+" to reach both instances", func() bool {
				ixw, ok := in.store.Index().Get(w.ID)
				return ok && ixw.Disabled == st.disabled && ixw.DisabledReason == st.reason && matched(in.store, w) != st.disabled
			})
			got, err := in.store.Get(ctx, "acme", w.ID)
			if err != nil || got.Disabled != st.disabled || got.DisabledReason != st.reason || got.Secret != w.Secret {
				t.Fatalf("%s: bbolt copy %+v, %v", st.name, got, err)
			}
		}
		want := 0.0
		if st.disabled {
			want = 1
		}
		if aGauge() != want || bGauge() != want {
			t.Fatalf("%s: webhookd_webhooks_disabled a=%v b=%v, want %v", st.name, aGauge(), bGauge(), want)
		}
	}

	// b misses an enable while it is down, and has it after a restart.
	b.stop()
	if err := b.store.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.store.Enable(ctx, "acme", w.ID); err != nil {
		t.Fatal(err)
	}
	bStore, bGauge = openMetered(t, bPath)
	if bGauge() != 1 {
		t.Fatalf("reopened b: webhookd_webhooks_disabled = %v before catching up, want 1", bGauge())
	}
	b = startInstance(t, ns, bStore)
	if d, ok := disabledIn(b.store, w.ID); !ok || d || !matched(b.store, w) || bGauge() != 0 {
		t.Fatalf("b after catching up: disabled %v, present %v, gauge %v", d, ok, bGauge())
	}

	// A delete after updates still deletes, everywhere.
	if _, _, err := a.store.Disable(ctx, w.ID, registry.DisabledGone, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to see the disable", func() bool { d, _ := disabledIn(b.store, w.ID); return d })
	if err := b.store.Delete(ctx, "acme", w.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to drop the deleted webhook", func() bool { return !has(a.store, w.ID) })
	for name, in := range map[string]*instance{"a": a, "b": b} {
		if has(in.store, w.ID) || in.store.Count() != 0 {
			t.Fatalf("%s still has the deleted webhook (count %d)", name, in.store.Count())
		}
		if _, err := in.store.Get(ctx, "acme", w.ID); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("%s's bbolt still has it: %v", name, err)
		}
	}
	if aGauge() != 0 || bGauge() != 0 {
		t.Fatalf("gauges after deleting a disabled webhook: a=%v b=%v", aGauge(), bGauge())
	}
	// Updating a deleted webhook is not found, and brings nothing back.
	if _, _, err := a.store.Disable(ctx, w.ID, registry.DisabledGone, time.Now()); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("disable after delete: %v", err)
	}
}

// TestUpdateCannotResurrect: an update computed on an instance whose copy
// still has a webhook that another instance deleted is refused by the
// bucket's compare-and-swap instead of writing the webhook back.
func TestUpdateCannotResurrect(t *testing.T) {
	ns := natstest.JetStream(t)
	a := startInstance(t, ns, openStore(t, filepath.Join(t.TempDir(), "a.db")))
	w := newHook(t, "acme", "")
	if err := a.store.Create(t.Context(), w); err != nil {
		t.Fatal(err)
	}
	// Delete behind the Store's back, as another instance would, and call
	// the journal before the watch brings the deletion.
	kv := *a.rep.kv.Load()
	if err := kv.Delete(t.Context(), w.ID); err != nil {
		t.Fatal(err)
	}
	err := a.rep.Update(t.Context(), w.ID, func(cur []byte) ([]byte, error) { return cur, nil })
	if !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("update of a deleted webhook: %v", err)
	}
	if _, err := kv.Get(t.Context(), w.ID); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the bucket has the deleted webhook again: %v", err)
	}
	waitFor(t, "the deletion to reach the store", func() bool { return !has(a.store, w.ID) })
}

// TestConcurrentUpdatesConverge: instances disabling and enabling one
// webhook at once (compare-and-swap retries included) end agreeing with
// each other and with the bucket.
func TestConcurrentUpdatesConverge(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	a := startInstance(t, ns, openStore(t, filepath.Join(dir, "a.db")))
	b := startInstance(t, ns, openStore(t, filepath.Join(dir, "b.db")))
	w := newHook(t, "acme", "")
	if err := a.store.Create(t.Context(), w); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to have the webhook", func() bool { return has(b.store, w.ID) })
	var wg sync.WaitGroup
	for i, in := range []*instance{a, b, a, b} {
		wg.Go(func() {
			for range 10 {
				var err error
				if i%2 == 0 {
					_, _, err = in.store.Disable(t.Context(), w.ID, registry.DisabledFailing, time.Now())
				} else {
					_, err = in.store.Enable(t.Context(), "acme", w.ID)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	kv := *a.rep.kv.Load()
	e, err := kv.Get(t.Context(), w.ID)
	if err != nil {
		t.Fatal(err)
	}
	final := e.Value() // no Sealer: a Store encodes a webhook to exactly these bytes
	for name, in := range map[string]*instance{"a": a, "b": b} {
		waitFor(t, name+" to converge on the bucket's value", func() bool {
			got, ok := in.store.Index().Get(w.ID)
			if !ok {
				return false
			}
			v, err := in.store.Encode(*got)
			return err == nil && string(v) == string(final)
		})
	}
}

// TestDirectApplyIsNotUndone: a change applied out of the watch's order
// (a late echo) is not overwritten when the watch then brings older
// entries of the same webhook, and is skipped when the watch has already
// passed it.
func TestDirectApplyIsNotUndone(t *testing.T) {
	ns := natstest.JetStream(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"))
	rep, err := New(Config{JetStream: js, Store: s}) // no Run: the test plays the watch
	if err != nil {
		t.Fatal(err)
	}
	w := newHook(t, "acme", "")
	off := w
	off.Disabled, off.DisabledReason = true, registry.DisabledGone
	enc := func(w registry.Webhook) []byte {
		v, err := s.Encode(w)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if err := rep.applyDirect(registry.Change{ID: w.ID, Value: enc(off), Revision: 11}); err != nil {
		t.Fatal(err)
	}
	// The watch, behind, brings the creation (10), then the update (11).
	if err := rep.apply([]registry.Change{{ID: w.ID, Value: enc(w), Revision: 10}}); err != nil {
		t.Fatal(err)
	}
	if d, ok := disabledIn(s, w.ID); !ok || !d {
		t.Fatalf("an older entry undid a newer one applied directly: present %v disabled %v", ok, d)
	}
	if err := rep.apply([]registry.Change{{ID: w.ID, Value: enc(off), Revision: 11}}); err != nil {
		t.Fatal(err)
	}
	rep.applyMu.Lock()
	left := len(rep.ahead)
	rep.applyMu.Unlock()
	if left != 0 {
		t.Fatal("the watch passed the direct apply's revision, but the id is still held back")
	}
	// Past revision 11, a direct apply of an older state is dropped.
	if err := rep.applyDirect(registry.Change{ID: w.ID, Value: enc(w), Revision: 11}); err != nil {
		t.Fatal(err)
	}
	if d, _ := disabledIn(s, w.ID); !d {
		t.Fatal("a direct apply the watch had passed overwrote the store")
	}
	if rev, _ := s.JournalRevision(); rev != 11 {
		t.Fatalf("resume point %d, want 11", rev)
	}
	if m := s.Index().Match("acme", events.WorkflowRunFailed, "", nil); len(m) != 0 {
		t.Fatalf("the disabled webhook matched: %v", m)
	}
}
