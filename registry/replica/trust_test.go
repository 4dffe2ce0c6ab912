package replica

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
)

// startWith is startInstance with a Config of the test's choosing and its
// metrics on reg. It does not wait for readiness.
func startWith(t *testing.T, ns *server.Server, store *registry.Store, reg prometheus.Registerer, tune func(*Config)) *instance {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{JetStream: js, Store: store, Registerer: reg}
	if tune != nil {
		tune(&cfg)
	}
	rep, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	store.UseJournal(rep)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = rep.Run(ctx) })
	in := &instance{store: store, rep: rep}
	in.stop = sync.OnceFunc(func() { cancel(); wg.Wait(); nc.Close() })
	t.Cleanup(in.stop)
	return in
}

// syncWithin runs the read-your-writes barrier, bounded.
func syncWithin(t *testing.T, r *Replica) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := r.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

func rawKV(t *testing.T, ns *server.Server) jetstream.KeyValue {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(t.Context(), "WEBHOOKD_REGISTRY")
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func sealedStore(t *testing.T, path string, keys ...[]byte) *registry.Store {
	t.Helper()
	sealer, err := registry.NewSealer(keys)
	if err != nil {
		t.Fatal(err)
	}
	s, err := registry.Open(registry.Config{Path: path, Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newKey(t *testing.T) []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

// TestForgedEntriesRefused: entries written straight into the bucket are
// held to the API's rules; a refused one never matches, is counted, and
// an invalid rewrite of a good webhook removes it everywhere alike.
func TestForgedEntriesRefused(t *testing.T) {
	ns := natstest.JetStream(t)
	reg := prometheus.NewRegistry()
	a := startWith(t, ns, openStore(t, filepath.Join(t.TempDir(), "a.db")), reg, nil)
	waitFor(t, "sync", func() bool { return a.rep.Ready() == nil })
	kv := rawKV(t, ns)
	good := newHook(t, "acme", "")
	if err := a.store.Create(t.Context(), good); err != nil {
		t.Fatal(err)
	}
	forge := func(mut func(*registry.Webhook)) (string, []byte) {
		w := newHook(t, "acme", "")
		mut(&w)
		v, _ := json.Marshal(w)
		return w.ID, v
	}
	cases := []struct {
		name string
		mut  func(*registry.Webhook)
	}{
		{"metadata address", func(w *registry.Webhook) { w.URL = "http://169.254.169.254/latest/meta-data" }},
		{"loopback", func(w *registry.Webhook) { w.URL = "http://127.0.0.1:8080/" }},
		{"bad scheme", func(w *registry.Webhook) { w.URL = "file:///etc/passwd" }},
		{"unknown event type", func(w *registry.Webhook) { w.EventType = "workflowRun.exploded" }},
		{"weak secret", func(w *registry.Webhook) { w.Secret = "whsec_c2hvcnQ=" }},
		{"no workspace", func(w *registry.Webhook) { w.Workspace = "" }},
		{"no creation time", func(w *registry.Webhook) { w.CreatedAt = time.Time{} }},
	}
	for _, tc := range cases {
		id, v := forge(tc.mut)
		if _, err := kv.Put(t.Context(), id, v); err != nil {
			t.Fatal(err)
		}
	}
	// Not JSON, and a value naming another id.
	if _, err := kv.Put(t.Context(), "wh_00000000000000000000000000", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	other, _ := json.Marshal(newHook(t, "acme", ""))
	if _, err := kv.Put(t.Context(), "wh_11111111111111111111111111", other); err != nil {
		t.Fatal(err)
	}
	// A rewrite of the good webhook towards the metadata address.
	bad := good
	bad.URL = "http://169.254.169.254/"
	bv, _ := json.Marshal(bad)
	if _, err := kv.Put(t.Context(), good.ID, bv); err != nil {
		t.Fatal(err)
	}
	syncWithin(t, a.rep)
	refused := testutil.ToFloat64(a.rep.m.refused.WithLabelValues(registry.RefusedInvalid))
	if want := float64(len(cases) + 3); refused != want {
		t.Errorf("refused (invalid) = %v, want %v", refused, want)
	}
	if n := a.store.Count(); n != 0 {
		t.Errorf("the store holds %d webhooks, want 0 (all forged, the rewritten one removed)", n)
	}
	if m := a.store.Index().Match("acme", events.WorkflowRunFailed, "", nil); len(m) != 0 {
		t.Errorf("forged entries match: %d", len(m))
	}
	if err := a.rep.Ready(); err != nil {
		t.Errorf("refusing forged entries made the instance unready: %v", err)
	}
}

// TestPlaintextRefusedOnceSealed: with encryption on, plaintext entries
// are accepted (and re-sealed) only until the bucket carries the sealing
// marker; after that a plaintext entry is refused.
func TestPlaintextRefusedOnceSealed(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	plain := startInstance(t, ns, openStore(t, filepath.Join(dir, "plain.db")))
	old := newHook(t, "acme", "")
	if err := plain.store.Create(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	plain.stop()

	key := newKey(t)
	a := startWith(t, ns, sealedStore(t, filepath.Join(dir, "a.db"), key), nil, nil)
	waitFor(t, "sync", func() bool { return a.rep.Ready() == nil })
	kv := rawKV(t, ns)
	// Planted at once, before the re-sealing pass may have set the
	// marker: only entries older than this instance's start are migrated.
	early := newHook(t, "acme", "")
	ev, _ := json.Marshal(early)
	if _, err := kv.Put(t.Context(), early.ID, ev); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bucket to be re-sealed", func() bool {
		e, err := kv.Get(t.Context(), old.ID)
		m, merr := kv.Get(t.Context(), markerKey)
		return err == nil && merr == nil && strings.Contains(string(e.Value()), `"secret":"enc:v1:`) &&
			string(m.Value()) == a.store.SealingKeyID()
	})
	if got, err := a.store.Get(t.Context(), "acme", old.ID); err != nil || got.Secret != old.Secret {
		t.Fatalf("the migrated webhook: %v (secret kept: %v)", err, got.Secret == old.Secret)
	}
	planted := newHook(t, "acme", "")
	v, _ := json.Marshal(planted)
	if _, err := kv.Put(t.Context(), planted.ID, v); err != nil {
		t.Fatal(err)
	}
	syncWithin(t, a.rep)
	if has(a.store, planted.ID) || has(a.store, early.ID) {
		t.Fatalf("a plaintext entry was accepted (early %v, after the marker %v)", has(a.store, early.ID), has(a.store, planted.ID))
	}
	if n := testutil.ToFloat64(a.rep.m.refused.WithLabelValues(registry.RefusedPlaintext)); n != 2 {
		t.Errorf("refused (plaintext) = %v, want 2", n)
	}
}

// TestRotationReachesTheBucket: after a rotation on one instance, a fresh
// instance holding only the new key reads every entry; one holding a key
// that opens nothing is not ready, says why, and lets fan-out wait.
func TestRotationReachesTheBucket(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	a := startWith(t, ns, sealedStore(t, filepath.Join(dir, "a.db"), k1), nil, nil)
	waitFor(t, "sync", func() bool { return a.rep.Ready() == nil })
	var hooks []registry.Webhook
	for range 20 {
		w := newHook(t, "acme", "")
		if err := a.store.Create(t.Context(), w); err != nil {
			t.Fatal(err)
		}
		hooks = append(hooks, w)
	}

	// A fresh instance with only the new key, before the rotation: stuck.
	reg := prometheus.NewRegistry()
	c := startWith(t, ns, sealedStore(t, filepath.Join(dir, "c.db"), k2), reg, nil)
	waitFor(t, "c to report the entries it cannot open", func() bool {
		err := c.rep.Ready()
		return err != nil && strings.Contains(err.Error(), "--encryption-key")
	})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	if err := c.rep.Sync(ctx); err == nil {
		t.Error("Sync succeeded on a registry with entries it cannot open")
	}
	cancel()
	if n := testutil.ToFloat64(c.rep.m.refused.WithLabelValues(registry.RefusedSealed)); n != float64(len(hooks)) {
		t.Errorf("refused (sealed) = %v, want %d", n, len(hooks))
	}

	// Rotate a: new key first, old one after it.
	a.stop()
	if err := a.store.Close(); err != nil {
		t.Fatal(err)
	}
	a = startWith(t, ns, sealedStore(t, filepath.Join(dir, "a.db"), k2, k1), nil, nil)
	waitFor(t, "c to read every entry once a re-sealed the bucket", func() bool { return c.rep.Ready() == nil })
	for _, w := range hooks {
		got, ok := c.store.Index().Get(w.ID)
		if !ok || got.Secret != w.Secret {
			t.Fatalf("c lacks %s or its secret differs", w.ID)
		}
	}
	syncWithin(t, c.rep)

	// A fresh instance with an unrelated key stays unready.
	d := startWith(t, ns, sealedStore(t, filepath.Join(dir, "d.db"), k3), nil, nil)
	waitFor(t, "d to be stuck on the sealed entries", func() bool {
		err := d.rep.Ready()
		return err != nil && strings.Contains(err.Error(), "encrypted with a key")
	})
}
