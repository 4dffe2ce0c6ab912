package apikeys_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/events/natstest"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/api"
	"github.com/webhookd/webhookd/registry/apikeys"
)

// propagation is the bound within which another instance must see a
// change (the contract); polls stop as soon as it is seen.
const propagation = time.Second

// clock is a settable clock shared by the instances of a test.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

type instance struct {
	store *apikeys.Store
	reg   *prometheus.Registry
	nc    *nats.Conn
	js    jetstream.JetStream
}

func connect(t *testing.T, ns *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return natstest.Client(t, ns)
}

// start runs a Store on its own connection until the test ends, and waits
// until it has loaded the bucket.
func start(t *testing.T, ns *server.Server, c *clock, mutate ...func(*apikeys.Config)) *instance {
	t.Helper()
	nc, js := connect(t, ns)
	reg := prometheus.NewRegistry()
	cfg := apikeys.Config{JetStream: js, Registerer: reg, Now: c.now}
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := apikeys.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	waitFor(t, 10*time.Second, "the store to load", func() bool { return s.Ready() == nil })
	return &instance{store: s, reg: reg, nc: nc, js: js}
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func resolves(s *apikeys.Store, key, ws string) func() bool {
	return func() bool { got, ok := s.Resolve(key); return ok && got == ws }
}

func refused(s *apikeys.Store, key string) func() bool {
	return func() bool { _, ok := s.Resolve(key); return !ok }
}

// TestKeysPropagateBetweenInstances: a key created and then revoked at run
// time through instance A authenticates on A at once and on B within a
// second, then stops on both.
func TestKeysPropagateBetweenInstances(t *testing.T) {
	ns := natstest.JetStream(t)
	c := newClock()
	a, b := start(t, ns, c), start(t, ns, c)

	created, err := a.store.Create(t.Context(), "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !apikeys.LooksLikeKey(created.Key) || !apikeys.ValidID(created.Record.ID) || !created.Record.ExpiresAt.IsZero() {
		t.Fatalf("created %+v", created.Record)
	}
	if ws, ok := a.store.Resolve(created.Key); !ok || ws != "acme" {
		t.Fatalf("A does not resolve its own new key at once: %q %v", ws, ok)
	}
	d := waitFor(t, propagation, "B to see the new key", resolves(b.store, created.Key, "acme"))
	t.Logf("creation seen by B after %s", d)
	if _, ok := b.store.Resolve(created.Key + "x"); ok {
		t.Fatal("a wrong key resolves")
	}

	revoked, err := a.store.Revoke(t.Context(), created.Record.ID)
	if err != nil || !revoked.Revoked || revoked.RevokedAt.IsZero() {
		t.Fatalf("revoke: %+v %v", revoked, err)
	}
	if _, ok := a.store.Resolve(created.Key); ok {
		t.Fatal("A still resolves the key it revoked")
	}
	d = waitFor(t, propagation, "B to see the revocation", refused(b.store, created.Key))
	t.Logf("revocation seen by B after %s", d)

	// Revoking again changes nothing; the record stays, as the audit trail.
	again, err := b.store.Revoke(t.Context(), created.Record.ID)
	if err != nil || !again.RevokedAt.Equal(revoked.RevokedAt) {
		t.Fatalf("second revoke: %+v %v", again, err)
	}
	list, err := b.store.List(t.Context(), "acme")
	if err != nil || len(list) != 1 || list[0].StateAt(c.now()) != apikeys.Revoked {
		t.Fatalf("list after revoke: %+v %v", list, err)
	}
	if got := metricValue(t, a.reg, "webhookd_api_keys_active"); got != 0 {
		t.Fatalf("active gauge = %v after revocation", got)
	}
}

// metricValue is the value of the first series of family name (-1 if absent).
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		return m.GetCounter().GetValue()
	}
	return -1
}

func TestExpiry(t *testing.T) {
	ns := natstest.JetStream(t)
	c := newClock()
	a, b := start(t, ns, c), start(t, ns, c)
	short, err := a.store.Create(t.Context(), "acme", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	long, err := a.store.Create(t.Context(), "acme", 720*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if want := c.now().Add(time.Hour); !short.Record.ExpiresAt.Equal(want.Truncate(time.Millisecond)) {
		t.Fatalf("expiresAt %v, want %v", short.Record.ExpiresAt, want)
	}
	waitFor(t, propagation, "B to see both keys", func() bool {
		return resolves(b.store, short.Key, "acme")() && resolves(b.store, long.Key, "acme")()
	})
	c.advance(time.Hour)
	for name, s := range map[string]*apikeys.Store{"A": a.store, "B": b.store} {
		if _, ok := s.Resolve(short.Key); ok {
			t.Errorf("%s resolves a key at its expiry", name)
		}
		if _, ok := s.Resolve(long.Key); !ok {
			t.Errorf("%s refuses a key 719h before its expiry", name)
		}
	}
	list, err := a.store.List(t.Context(), "acme")
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %+v %v", list, err)
	}
	for _, r := range list {
		want := map[string]apikeys.State{short.Record.ID: apikeys.Expired, long.Record.ID: apikeys.Active}[r.ID]
		if got := r.StateAt(c.now()); got != want {
			t.Errorf("%s listed %s, want %s", r.ID, got, want)
		}
	}
	if _, err := a.store.Create(t.Context(), "acme", -time.Second); !errors.Is(err, apikeys.ErrInvalid) {
		t.Fatalf("negative expiry: %v", err)
	}
}

// TestBootstrapRetiredBySharedKey runs the retirement rule of
// api.KeySet against the real store: the bootstrap key of instance B stops
// working within a second of a key for "default" being created on A, and
// revoking that key does not bring it back. --api-keys keys are never
// affected.
func TestBootstrapRetiredBySharedKey(t *testing.T) {
	ns := natstest.JetStream(t)
	c := newClock()
	a, b := start(t, ns, c), start(t, ns, c)
	const bootKey, staticKey = "wk_bootstrap-0123456789abcdef", "static-default-key-0123456789"
	keysOf := func(in *instance) api.KeySet {
		return api.KeySet{
			Static:    registry.NewKeyRing([]registry.APIKey{{Workspace: "default", Key: staticKey}}, nil),
			Shared:    in.store,
			Bootstrap: registry.NewKeyRing([]registry.APIKey{{Workspace: registry.BootstrapWorkspace, Key: bootKey}}, nil),
		}
	}
	setB := keysOf(b)
	if ws, ok := setB.Resolve(bootKey); !ok || ws != "default" {
		t.Fatal("bootstrap key refused before any shared key exists")
	}
	// A key for another workspace does not retire it.
	if _, err := a.store.Create(t.Context(), "acme", 0); err != nil {
		t.Fatal(err)
	}
	created, err := a.store.Create(t.Context(), "default", 0)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, propagation, "B to retire its bootstrap key", func() bool { _, ok := setB.Resolve(bootKey); return !ok })
	if ws, ok := setB.Resolve(created.Key); !ok || ws != "default" {
		t.Fatal("the shared key does not authenticate on B")
	}
	if _, err := a.store.Revoke(t.Context(), created.Record.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, propagation, "B to see the revocation", refused(b.store, created.Key))
	if _, ok := setB.Resolve(bootKey); ok {
		t.Fatal("revoking the shared key brought the bootstrap key back")
	}
	for _, set := range []api.KeySet{keysOf(a), setB} {
		if ws, ok := set.Resolve(staticKey); !ok || ws != "default" {
			t.Fatal("a configured key was affected")
		}
	}

	// A store that has not loaded yet fails closed for the bootstrap key.
	_, js := connect(t, ns)
	cold, err := apikeys.New(apikeys.Config{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	if !cold.Issued("default") || cold.Ready() == nil {
		t.Fatal("an unloaded store must report Issued and not Ready")
	}
	var none *apikeys.Store
	if none.Issued("default") {
		t.Fatal("a nil store has issued nothing")
	}
	if _, ok := none.Resolve(created.Key); ok {
		t.Fatal("a nil store resolved a key")
	}
}

// TestOpsWithoutRun: the `webhookd keys` command uses a Store without Run;
// its operations bind (and if need be create) the bucket themselves.
func TestOpsWithoutRun(t *testing.T) {
	ns := natstest.JetStream(t)
	_, js := connect(t, ns)
	cli, err := apikeys.New(apikeys.Config{JetStream: js, MaxActivePerWorkspace: 2})
	if err != nil {
		t.Fatal(err)
	}
	k1, err := cli.Create(t.Context(), "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cli.Resolve(k1.Key); ok {
		t.Fatal("a store without Run resolved from an index it never loaded")
	}
	if _, err := cli.Create(t.Context(), "acme", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Create(t.Context(), "acme", 0); !errors.Is(err, apikeys.ErrTooManyKeys) {
		t.Fatalf("third active key: %v, want ErrTooManyKeys", err)
	}
	if _, err := cli.Revoke(t.Context(), k1.Record.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Create(t.Context(), "acme", 0); err != nil {
		t.Fatalf("a revoked key still counts against the limit: %v", err)
	}
	if _, err := cli.Create(t.Context(), "other", 0); err != nil {
		t.Fatalf("the limit is per workspace: %v", err)
	}
	all, err := cli.List(t.Context(), "")
	if err != nil || len(all) != 4 {
		t.Fatalf("list all: %d %v", len(all), err)
	}
	got, err := cli.Get(t.Context(), k1.Record.ID)
	if err != nil || got.ID != k1.Record.ID || !got.Revoked {
		t.Fatalf("get: %+v %v", got, err)
	}
	for _, id := range []string{"ak_0000000000000000", "not-an-id", ""} {
		if _, err := cli.Revoke(t.Context(), id); !errors.Is(err, apikeys.ErrNotFound) {
			t.Errorf("revoke %q: %v, want ErrNotFound", id, err)
		}
	}
	for _, ws := range []string{"", "ac me", strings.Repeat("w", 65)} {
		if _, err := cli.Create(t.Context(), ws, 0); !errors.Is(err, apikeys.ErrInvalid) {
			t.Errorf("create for %q: %v, want ErrInvalid", ws, err)
		}
	}
	// The bucket holds hashes, never a key.
	kv, err := js.KeyValue(t.Context(), apikeys.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(t.Context(), k1.Record.ID)
	if err != nil || strings.Contains(string(e.Value()), k1.Key) || strings.Contains(string(e.Value()), k1.Key[len(apikeys.KeyPrefix):]) {
		t.Fatalf("stored record %s: %v", e.Value(), err)
	}
}

// TestForgedEntriesRefused: entries that are not well-formed records
// authenticate nothing, are counted, and a well-formed record turned into
// garbage stops authenticating.
func TestForgedEntriesRefused(t *testing.T) {
	ns := natstest.JetStream(t)
	c := newClock()
	a := start(t, ns, c)
	created, err := a.store.Create(t.Context(), "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := a.js.KeyValue(t.Context(), apikeys.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	for key, val := range map[string]string{"ak_1111111111111111": `{"id":"ak_1111111111111111"}`, "junk": `]]`} {
		if _, err := kv.Put(t.Context(), key, []byte(val)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(t.Context(), created.Record.ID, []byte(`{"id":"`+created.Record.ID+`","workspace":"acme"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, propagation, "the garbled record to stop authenticating", refused(a.store, created.Key))
	waitFor(t, propagation, "three refusals counted", func() bool {
		return metricValue(t, a.reg, "webhookd_api_keys_refused_total") == 3
	})
	if list, err := a.store.List(t.Context(), ""); err != nil || len(list) != 0 {
		t.Fatalf("list shows forged entries: %+v %v", list, err)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	ns := natstest.JetStream(t)
	_, js := connect(t, ns)
	tests := []struct {
		name string
		cfg  apikeys.Config
	}{
		{"no JetStream", apikeys.Config{}},
		{"replicas", apikeys.Config{JetStream: js, Replicas: 6}},
		{"negative replicas", apikeys.Config{JetStream: js, Replicas: -1}},
		{"negative max active", apikeys.Config{JetStream: js, MaxActivePerWorkspace: -1}},
		{"negative max bytes", apikeys.Config{JetStream: js, MaxBytes: -1}},
		{"bad bucket", apikeys.Config{JetStream: js, Bucket: "a.b"}},
	}
	for _, tc := range tests {
		if _, err := apikeys.New(tc.cfg); !errors.Is(err, apikeys.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tc.name, err)
		}
	}
	reg := prometheus.NewRegistry()
	if _, err := apikeys.New(apikeys.Config{JetStream: js, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := apikeys.New(apikeys.Config{JetStream: js, Registerer: reg}); err == nil {
		t.Fatal("duplicate metric registration accepted")
	}
}
