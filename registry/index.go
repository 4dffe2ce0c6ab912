package registry

import (
	"sync"
	"sync/atomic"

	"github.com/webhookd/webhookd/events"
)

// matchKey is what an event is matched on. WorkflowID "" is the key of
// subscriptions to every workflow.
type matchKey struct {
	workspace  string
	eventType  events.Type
	workflowID string
}

// Index answers "which webhooks get this event" without scanning. It is
// safe for any number of concurrent readers and one writer at a time (the
// Store serialises writes).
type Index struct {
	buckets sync.Map // matchKey -> *atomic.Pointer[[]*Webhook]
	byID    sync.Map // id -> *Webhook
	n       atomic.Int64
	mu      sync.Mutex // serialises writers
}

func newIndex() *Index { return &Index{} }

func keyOf(w *Webhook) matchKey {
	return matchKey{workspace: w.Workspace, eventType: w.EventType, workflowID: w.WorkflowID}
}

// Match appends to dst the webhooks an event of this workspace, type and
// workflow goes to: those for every workflow, then those for this one.
func (ix *Index) Match(workspace string, t events.Type, workflowID string, dst []*Webhook) []*Webhook {
	dst = ix.appendKey(dst, matchKey{workspace, t, ""})
	if workflowID != "" {
		dst = ix.appendKey(dst, matchKey{workspace, t, workflowID})
	}
	return dst
}

func (ix *Index) appendKey(dst []*Webhook, k matchKey) []*Webhook {
	v, ok := ix.buckets.Load(k)
	if !ok {
		return dst
	}
	if s := v.(*atomic.Pointer[[]*Webhook]).Load(); s != nil {
		dst = append(dst, *s...)
	}
	return dst
}

// Get returns the live webhook with this id.
func (ix *Index) Get(id string) (*Webhook, bool) {
	v, ok := ix.byID.Load(id)
	if !ok {
		return nil, false
	}
	return v.(*Webhook), true
}

// Len is the number of indexed webhooks.
func (ix *Index) Len() int { return int(ix.n.Load()) }

func (ix *Index) add(w *Webhook) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	v, _ := ix.buckets.LoadOrStore(keyOf(w), new(atomic.Pointer[[]*Webhook]))
	p := v.(*atomic.Pointer[[]*Webhook])
	var next []*Webhook
	if old := p.Load(); old != nil {
		next = make([]*Webhook, len(*old), len(*old)+1)
		copy(next, *old)
	}
	next = append(next, w)
	p.Store(&next)
	ix.byID.Store(w.ID, w)
	ix.n.Add(1)
}

func (ix *Index) remove(w *Webhook) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if _, ok := ix.byID.LoadAndDelete(w.ID); !ok {
		return
	}
	ix.n.Add(-1)
	k := keyOf(w)
	v, ok := ix.buckets.Load(k)
	if !ok {
		return
	}
	p := v.(*atomic.Pointer[[]*Webhook])
	old := p.Load()
	if old == nil {
		return
	}
	next := make([]*Webhook, 0, len(*old))
	for _, x := range *old {
		if x.ID != w.ID {
			next = append(next, x)
		}
	}
	if len(next) == 0 {
		ix.buckets.Delete(k)
		p.Store(nil)
		return
	}
	p.Store(&next)
}

// bulkLoad fills an empty index at Open without per-entry copying.
func (ix *Index) bulkLoad(all []*Webhook) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	groups := make(map[matchKey][]*Webhook)
	for _, w := range all {
		groups[keyOf(w)] = append(groups[keyOf(w)], w)
		ix.byID.Store(w.ID, w)
	}
	for k, s := range groups {
		p := new(atomic.Pointer[[]*Webhook])
		s := s
		p.Store(&s)
		ix.buckets.Store(k, p)
	}
	ix.n.Store(int64(len(all)))
}
