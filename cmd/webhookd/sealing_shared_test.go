package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/registry"
)

// More of DESIGN §6 "One truth across instances": failure records, keys
// and the trust placed in the shared bucket.

type sharedFailure struct {
	ID, WebhookID, EventID, Reason string
	Attempts                       int
}

func (d *daemon) failureList(id string) []sharedFailure {
	d.t.Helper()
	status, body := d.api(http.MethodGet, "/api/webhook/"+id+"/failures", nil)
	if status != 200 {
		d.t.Fatalf("failures of %s: %d %s", id, status, body)
	}
	var env struct{ Data []sharedFailure }
	if err := json.Unmarshal(body, &env); err != nil {
		d.t.Fatal(err)
	}
	return env.Data
}

func failureIDs(fs []sharedFailure) []string {
	ids := make([]string, len(fs))
	for i, f := range fs {
		ids[i] = f.ID
	}
	slices.Sort(ids)
	return ids
}

// TestFailuresThroughEitherInstance: deliveries that fail for good are
// listed identically through both instances, whichever gave up on them,
// and one listed by A can be retried through B.
func TestFailuresThroughEitherInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("two real daemons")
	}
	const events = 2
	url := sharedNATS(t)
	flags := []string{"--retry-max-attempts", "2", "--retry-initial", "200ms", "--circuit-failures", "100"}
	a, b := onNATS(t, url, flags...), onNATS(t, url, flags...)
	a.start()
	b.start()
	var mu sync.Mutex
	seen := map[string]int{} // webhook-id -> requests
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("webhook-id")]++
		mu.Unlock()
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer recv.Close()
	hook, _ := a.register(recv.URL+"/always-500", "workflowRun.completed", "")
	waitUntil(t, 10*time.Second, "B to have the webhook", func() bool { return metricValue(t, b, "webhookd_registrations") == 1 })
	publishEventsFrom(t, url, 0, events)

	var fa, fb []sharedFailure
	recorded := pollUntil(30*time.Second, func() bool {
		fa, fb = a.failureList(hook), b.failureList(hook)
		return len(fa) >= events || len(fb) >= events || len(fa)+len(fb) >= events && len(fa) > 0 && len(fb) > 0
	})
	if !recorded {
		t.Fatalf("no instance recorded the %d failures within 30 s: A lists %d, B %d", events, len(fa), len(fb))
	}
	same := pollUntil(10*time.Second, func() bool {
		fa, fb = a.failureList(hook), b.failureList(hook)
		return len(fa) == events && slices.Equal(failureIDs(fa), failureIDs(fb))
	})
	t.Logf("failures: A lists %v, B lists %v; given up by A %.0f, by B %.0f", failureIDs(fa), failureIDs(fb),
		metricSum(t, a, "webhookd_deliveries_failed_total"), metricSum(t, b, "webhookd_deliveries_failed_total"))
	if !same {
		t.Errorf("the instances list different failure records: A %v, B %v", failureIDs(fa), failureIDs(fb))
	}
	if len(fa) == 0 {
		t.Fatal("A lists no failure record to retry through B")
	}
	f := fa[0]
	if f.Attempts != 2 || f.WebhookID != hook {
		t.Errorf("failure record %+v, want 2 attempts of webhook %s", f, hook)
	}
	mu.Lock()
	before := seen[f.ID]
	mu.Unlock()
	status, body := b.api(http.MethodPost, "/api/webhook/"+hook+"/failures/"+f.ID+"/retry", nil)
	if status != 200 {
		t.Fatalf("retry through B of the record A lists: %d %s", status, body)
	}
	retried := time.Now()
	waitUntil(t, 15*time.Second, "the redelivery with the same webhook-id", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return seen[f.ID] > before
	})
	t.Logf("retry through B of %s (listed by A): redelivered with the same webhook-id in %s", f.ID, time.Since(retried).Round(time.Millisecond))
}

func newEncryptionKey() string {
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	return base64.StdEncoding.EncodeToString(raw)
}

// sealedKeyID is the key id a Sealer writes into "enc:v1:<id>:...".
func sealedKeyID(key string) string {
	raw, _ := base64.StdEncoding.DecodeString(key)
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:4])
}

// bucketSecrets returns the stored secret of every webhook entry in the
// bucket (keys "wh_..."; the replica may keep markers of its own there).
func bucketSecrets(t *testing.T, kv jetstream.KeyValue) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k := range keys.Keys() {
		if !strings.HasPrefix(k, "wh_") {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		var w struct{ Secret string }
		_ = json.Unmarshal(e.Value(), &w)
		out[k] = w.Secret
	}
	return out
}

// TestKeyRotationFreshInstance: after a rotation (--encryption-key
// "K2,K1"), the shared bucket's entries are sealed with K2 too, so a fresh
// instance holding only K2 has every subscription and delivers; a fresh
// instance holding a key that opens nothing (K3, or K1 after the rotation)
// is not ready and says why.
func TestKeyRotationFreshInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("real daemons")
	}
	const subs, events = 3, 20
	k1, k2, k3 := newEncryptionKey(), newEncryptionKey(), newEncryptionKey()
	url := sharedNATS(t)
	a := onNATS(t, url, "--encryption-key", k1)
	a.start()
	l := newLedger()
	recv := httptest.NewServer(http.HandlerFunc(l.handler))
	defer recv.Close()
	subscribe(t, a, l, recv.URL, subs)
	ids := listIDs(t, a)

	if code, _ := a.term(20 * time.Second); code != 0 {
		t.Fatalf("A exit %d", code)
	}
	a.extra = []string{"--encryption-key", k2 + "," + k1}
	a.start()
	kv, err := a.jetStream().KeyValue(t.Context(), "WEBHOOKD_REGISTRY")
	if err != nil {
		t.Fatal(err)
	}
	var secrets map[string]string
	resealed := pollUntil(10*time.Second, func() bool {
		secrets = bucketSecrets(t, kv)
		for _, s := range secrets {
			if !strings.HasPrefix(s, "enc:v1:"+sealedKeyID(k2)+":") {
				return false
			}
		}
		return len(secrets) == subs
	})
	if !resealed {
		n := 0
		for _, s := range secrets {
			if strings.HasPrefix(s, "enc:v1:"+sealedKeyID(k1)+":") {
				n++
			}
		}
		t.Errorf("10 s after the rotation %d of %d bucket entries are still sealed with the old key K1", n, len(secrets))
	}

	c := onNATS(t, url, "--encryption-key", k2)
	c.launch()
	var status int
	var reason string
	if !pollUntil(30*time.Second, func() bool { status, reason = c.readyz(); return status == 200 }) {
		t.Fatalf("fresh instance C with the new key K2 not ready after 30 s: %d %q", status, reason)
	}
	got := listIDs(t, c)
	slices.Sort(got)
	slices.Sort(ids)
	t.Logf("fresh C with K2 only: ready, lists %d of %d subscriptions", len(got), subs)
	if !slices.Equal(got, ids) {
		t.Fatalf("fresh instance C with the new key lists %v, want %v", got, ids)
	}
	// C alone delivers, with the secrets it opened with K2.
	if code, _ := a.term(20 * time.Second); code != 0 {
		t.Errorf("A exit %d", code)
	}
	publishEventsFrom(t, url, 0, events)
	waitUntil(t, 30*time.Second, "C's deliveries", func() bool { return l.unique() >= subs*events })
	l.check(t)

	// Fresh instances whose only key opens none of the entries.
	for name, key := range map[string]string{"D (K3 only)": k3, "E (K1 only, after the rotation)": k1} {
		t.Run(name, func(t *testing.T) {
			d := onNATS(t, url, "--encryption-key", key)
			d.launch()
			waitUntil(t, 30*time.Second, name+"'s /readyz answering", func() bool { s, _ := d.readyz(); return s != 0 })
			var status int
			var reason string
			explained := pollUntil(15*time.Second, func() bool {
				status, reason = d.readyz()
				r := strings.ToLower(reason)
				return status == 200 || status == 503 && (strings.Contains(r, "encrypt") || strings.Contains(r, "key"))
			})
			if status == 200 {
				t.Fatalf("%s became ready holding a key that opens none of the %d subscriptions (it lists %d)", name, subs, len(listIDs(t, d)))
			}
			if !explained {
				t.Errorf("%s not ready, but /readyz gives no encryption/key reason: %d %q", name, status, reason)
			}
			time.Sleep(2 * time.Second)
			if s, r := d.readyz(); s != 503 {
				t.Errorf("%s /readyz %d %q later, want 503", name, s, r)
			}
			t.Logf("%s: /readyz %d %q", name, status, reason)
		})
	}
}

// encoder opens a throwaway Store with the given key ("" for none), whose
// Encode makes bucket entries exactly as a real instance would.
func encoder(t *testing.T, key string) *registry.Store {
	t.Helper()
	var sealer *registry.Sealer
	if key != "" {
		keys, err := registry.ParseEncryptionKeys(key)
		if err != nil {
			t.Fatal(err)
		}
		if sealer, err = registry.NewSealer(keys); err != nil {
			t.Fatal(err)
		}
	}
	s, err := registry.Open(registry.Config{Path: filepath.Join(t.TempDir(), "forge.db"), Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func forgedEntry(t *testing.T, enc *registry.Store, url string) (string, []byte) {
	t.Helper()
	w, err := registry.New("acme", registry.Input{URL: url, EventType: "workflowRun.completed"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	v, err := enc.Encode(w)
	if err != nil {
		t.Fatal(err)
	}
	return w.ID, v
}

// TestForgedBucketEntryRefused: entries written straight into the shared
// bucket, bypassing the API, are held to the API's rules: one aimed at the
// metadata service or loopback (private targets not allowed), or one with a
// plaintext secret while sealing is on, is never listed, is counted in
// webhookd_registry_entries_refused_total and logged; the instance stays
// ready. A well-formed hand-written entry next to them is applied, so the
// refusals are the rules', not the format's.
func TestForgedBucketEntryRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("real daemons")
	}
	key := newEncryptionKey()
	for _, tt := range []struct {
		name    string
		key     string
		forged  func(t *testing.T) map[string][]byte
		control func(t *testing.T) (string, []byte)
	}{
		{"sealing off", "", func(t *testing.T) map[string][]byte {
			enc := encoder(t, "")
			id1, v1 := forgedEntry(t, enc, "http://169.254.169.254/latest/meta-data/")
			id2, v2 := forgedEntry(t, enc, "http://127.0.0.1:9/forged")
			return map[string][]byte{id1: v1, id2: v2}
		}, func(t *testing.T) (string, []byte) {
			return forgedEntry(t, encoder(t, ""), "https://example.com/hand-written")
		}},
		{"sealing on", key, func(t *testing.T) map[string][]byte {
			id1, v1 := forgedEntry(t, encoder(t, key), "http://169.254.169.254/latest/meta-data/") // sealed with the right key
			id2, v2 := forgedEntry(t, encoder(t, ""), "https://example.com/plaintext-secret")
			return map[string][]byte{id1: v1, id2: v2}
		}, func(t *testing.T) (string, []byte) {
			return forgedEntry(t, encoder(t, key), "https://example.com/hand-written")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			flags := []string{"--allow-private-targets=false"}
			if tt.key != "" {
				flags = append(flags, "--encryption-key", tt.key)
			}
			a := newDaemon(t, flags...)
			a.start()
			a.register("https://example.com/seed", "workflowRun.completed", "") // the workspace exists
			kv, err := a.jetStream().KeyValue(t.Context(), "WEBHOOKD_REGISTRY")
			if err != nil {
				t.Fatal(err)
			}
			forged := tt.forged(t)
			for id, v := range forged {
				if _, err := kv.Put(t.Context(), id, v); err != nil {
					t.Fatal(err)
				}
			}
			controlID, cv := tt.control(t)
			if _, err := kv.Put(t.Context(), controlID, cv); err != nil {
				t.Fatal(err)
			}
			checkRefused := func(d *daemon, who string) {
				var listed []string
				applied := pollUntil(10*time.Second, func() bool {
					listed = listIDs(t, d)
					for id := range forged {
						if slices.Contains(listed, id) {
							t.Errorf("%s lists the forged entry %s", who, id)
							return true
						}
					}
					return slices.Contains(listed, controlID)
				})
				if !applied {
					t.Errorf("%s never applied the well-formed hand-written entry %s: lists %v", who, controlID, listed)
				}
				for id := range forged {
					if s, body := d.api(http.MethodGet, "/api/webhook/"+id, nil); s != 404 {
						t.Errorf("%s GET forged %s: %d %s", who, id, s, body)
					}
				}
				var refused float64
				counted := pollUntil(5*time.Second, func() bool {
					refused = metricSum(t, d, "webhookd_registry_entries_refused_total")
					return refused >= float64(len(forged))
				})
				if !counted {
					t.Errorf("%s: webhookd_registry_entries_refused_total = %.0f after %d forged entries", who, refused, len(forged))
				}
				for id := range forged {
					if !strings.Contains(d.logs.String(), id) {
						t.Errorf("%s did not log the refused entry %s", who, id)
					}
				}
				if s, r := d.readyz(); s != 200 {
					t.Errorf("%s not ready after refusing forged entries: %d %q", who, s, r)
				}
				t.Logf("%s: lists %d, refused %.0f of %d forged entries, ready", who, len(listed), refused, len(forged))
				if t.Failed() {
					t.Logf("%s's shared-registry log lines:\n%s", who, grepLines(d.logs.String(), "component=replica"))
				}
			}
			checkRefused(a, "A")
			// An instance that joins now reads the same entries at catch-up.
			c := newDaemon(t, flags...)
			c.externalNATS = a.natsURL()
			c.start()
			checkRefused(c, "C (joined after)")
		})
	}
}

// grepLines returns the lines of s that contain substr.
func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
