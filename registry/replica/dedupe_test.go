package replica

import (
	"path/filepath"
	"testing"

	"github.com/webhookd/webhookd/events/natstest"
)

// TestBucketDedupeWindowShrunk: after every start the bucket's stream
// has the smallest duplicate window, and the bucket still works.
func TestBucketDedupeWindowShrunk(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	for start := range 2 {
		s := openStore(t, filepath.Join(dir, "r.db"))
		in := startInstance(t, ns, s)
		nc, js := natstest.Client(t, ns)
		st, err := js.Stream(t.Context(), "KV_WEBHOOKD_REGISTRY")
		if err != nil {
			t.Fatal(err)
		}
		if got := st.CachedInfo().Config.Duplicates; got != dedupeWindow {
			t.Fatalf("start %d: duplicate window %s, want %s", start, got, dedupeWindow)
		}
		if err := s.Create(t.Context(), newHook(t, "acme", "")); err != nil {
			t.Fatalf("start %d: create: %v", start, err)
		}
		nc.Close()
		in.stop()
		s.Close()
	}
}
