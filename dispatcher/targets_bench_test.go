package dispatcher

import (
	"strconv"
	"testing"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
)

// mapIndex is the smallest Subscriptions: Get from a map. The registry's
// index answers Get in about the same time, so the benchmark measures the
// prune's own cost.
type mapIndex map[string]*registry.Webhook

func (m mapIndex) Match(string, events.Type, string, []*registry.Webhook) []*registry.Webhook {
	return nil
}

func (m mapIndex) Get(id string) (*registry.Webhook, bool) {
	w, ok := m[id]
	return w, ok
}

// BenchmarkPruneTargets1M: one prune of a million cached targets, none of
// them stale (the common case: every entry is checked, none removed). Run
// calls it every 30 s.
func BenchmarkPruneTargets1M(b *testing.B) {
	idx := mapIndex{}
	d := &Dispatcher{cfg: Config{Subscriptions: idx}}
	for i := range 1_000_000 {
		id := "wh_" + strconv.Itoa(i)
		w := &registry.Webhook{ID: id}
		idx[id] = w
		d.targets.Store(id, &target{wh: w})
	}
	b.ResetTimer()
	for range b.N {
		d.pruneTargets()
	}
}
