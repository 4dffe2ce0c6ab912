package dispatcher_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/webhookd/webhookd/events"
)

// TestTargetCacheForgetsDeletedWebhooks: the per-webhook cache of parsed
// URLs and plaintext secrets keeps nothing of a webhook once it is deleted
// (or changed), even if no job of it ever comes again.
func TestTargetCacheForgetsDeletedWebhooks(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r := newReceiver(t, nil)
	var ids []string
	for i := range 5 {
		ids = append(ids, h.addWebhook("acme", r.URL+"/"+strconv.Itoa(i), events.WorkflowRunCompleted, "").ID)
	}
	h.publish("events.acme.workflowRun.completed", completed, "e1")
	waitFor(t, 10*time.Second, "every webhook delivered to", func() bool { return r.count() == len(ids) })
	if got := h.disp.CachedTargets(); len(got) != len(ids) {
		t.Fatalf("cache holds %d targets after the deliveries, want %d", len(got), len(ids))
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		change func(id string)
		keep   bool
	}{
		{"deleted", func(id string) {
			if err := h.store.Delete(ctx, "acme", id); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"deleted too", func(id string) {
			if err := h.store.Delete(ctx, "acme", id); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"changed (disabled): its stale copy goes", func(id string) {
			if _, _, err := h.store.Disable(ctx, id, "failing", time.Now()); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"untouched", func(string) {}, true},
		{"untouched too", func(string) {}, true},
	} {
		tc.change(ids[0])
		h.disp.PruneTargets()
		if cached := slices.Contains(h.disp.CachedTargets(), ids[0]); cached != tc.keep {
			t.Errorf("%s webhook: cached %v after a prune, want %v", tc.name, cached, tc.keep)
		}
		ids = ids[1:]
	}
	if got := h.disp.CachedTargets(); len(got) != 2 {
		t.Errorf("cache holds %v, want only the two untouched webhooks", got)
	}
}
