package replica

import (
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
)

// TestDirectAppliesKeepTheNewest: values read out of band (two Lookups of
// one webhook racing, a Lookup that read before a deletion) never replace
// a newer state already applied, nor undo a deletion whose echo the
// watch has not brought yet. No Run: the test plays the watch.
func TestDirectAppliesKeepTheNewest(t *testing.T) {
	_, js := natstest.Client(t, natstest.JetStream(t))
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "WEBHOOKD_REGISTRY", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t, filepath.Join(t.TempDir(), "a.db"))
	rep, err := New(Config{JetStream: js, Store: s})
	if err != nil {
		t.Fatal(err)
	}
	rep.kv.Store(&kv)
	enc := func(w registry.Webhook) []byte {
		v, err := s.Encode(w)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	disable := func(w registry.Webhook) registry.Webhook {
		w.Disabled, w.DisabledReason = true, registry.DisabledGone
		return w
	}

	t.Run("two lookups", func(t *testing.T) {
		w := newHook(t, "acme", "")
		// The later read (the disable at 11) is applied first.
		if err := rep.applyDirect(registry.Change{ID: w.ID, Value: enc(disable(w)), Revision: 11}); err != nil {
			t.Fatal(err)
		}
		if err := rep.applyDirect(registry.Change{ID: w.ID, Value: enc(w), Revision: 10}); err != nil {
			t.Fatal(err)
		}
		if d, ok := disabledIn(s, w.ID); !ok || !d {
			t.Fatalf("an older out-of-band read undid a newer one: present %v disabled %v", ok, d)
		}
	})

	t.Run("lookup after a deletion", func(t *testing.T) {
		w := newHook(t, "acme", "")
		rev, err := kv.Create(t.Context(), w.ID, enc(w))
		if err != nil {
			t.Fatal(err)
		}
		if err := rep.apply([]registry.Change{{ID: w.ID, Value: enc(w), Revision: rev}}); err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Update(t.Context(), w.ID, enc(disable(w)), rev); err != nil {
			t.Fatal(err)
		}
		// A Lookup reads the update, then the webhook is deleted here; the
		// watch brings neither, so Delete applies the deletion itself.
		read, err := kv.Get(t.Context(), w.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := rep.Delete(t.Context(), w.ID); err != nil {
			t.Fatal(err)
		}
		if has(s, w.ID) {
			t.Fatal("Delete returned with the webhook still stored")
		}
		if err := rep.applyDirect(registry.Change{ID: w.ID, Value: read.Value(), Revision: read.Revision()}); err != nil {
			t.Fatal(err)
		}
		if has(s, w.ID) {
			t.Fatal("a value read before the deletion brought the webhook back")
		}
	})
}
