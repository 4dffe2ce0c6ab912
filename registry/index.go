package registry

import (
	"hash/maphash"
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

// shardCount splits each of the index's maps into copy-on-write shards. A
// write copies one shard, so the count keeps that copy small (about 60
// entries at a million subscriptions) while an empty shard costs one nil
// pointer.
const shardCount = 1 << 14

// Index answers "which webhooks get this event" without scanning. Readers
// never lock or wait: each shard is an immutable map behind an atomic
// pointer, and a writer (the Store serialises them) publishes a modified
// copy of the one shard it changes. Plain Go maps keep a million entries
// in about a third of the memory sync.Map needs, and the string fields of
// the keys are the webhook's own, so the index allocates nothing per key.
//
// Disabled webhooks are in byID (Get finds them, so the dispatcher can see
// that a job's webhook was disabled) but in no match bucket, so Match
// never returns them and costs nothing for them.
type Index struct {
	seed     maphash.Seed
	byID     [shardCount]atomic.Pointer[map[string]*Webhook]
	buckets  [shardCount]atomic.Pointer[map[matchKey][]*Webhook]
	n        atomic.Int64
	disabled atomic.Int64
	mu       sync.Mutex // serialises writers
}

func newIndex() *Index { return &Index{seed: maphash.MakeSeed()} }

func (ix *Index) idShard(id string) *atomic.Pointer[map[string]*Webhook] {
	return &ix.byID[maphash.String(ix.seed, id)&(shardCount-1)]
}

func (ix *Index) keyShard(k matchKey) *atomic.Pointer[map[matchKey][]*Webhook] {
	return &ix.buckets[maphash.Comparable(ix.seed, k)&(shardCount-1)]
}

func keyOf(w *Webhook) matchKey {
	return matchKey{workspace: w.Workspace, eventType: w.EventType, workflowID: w.WorkflowID}
}

// Match appends to dst the enabled webhooks an event of this workspace,
// type and workflow goes to: those for every workflow, then those for this
// one.
func (ix *Index) Match(workspace string, t events.Type, workflowID string, dst []*Webhook) []*Webhook {
	dst = ix.appendKey(dst, matchKey{workspace, t, ""})
	if workflowID != "" {
		dst = ix.appendKey(dst, matchKey{workspace, t, workflowID})
	}
	return dst
}

func (ix *Index) appendKey(dst []*Webhook, k matchKey) []*Webhook {
	if m := ix.keyShard(k).Load(); m != nil {
		dst = append(dst, (*m)[k]...)
	}
	return dst
}

// Get returns the live webhook with this id, disabled or not. The webhook
// it points to is never modified: a change indexes a new one.
func (ix *Index) Get(id string) (*Webhook, bool) {
	m := ix.idShard(id).Load()
	if m == nil {
		return nil, false
	}
	w, ok := (*m)[id]
	return w, ok
}

// Len is the number of indexed webhooks, disabled ones included.
func (ix *Index) Len() int { return int(ix.n.Load()) }

// disabledLen is the number of indexed webhooks that are disabled.
func (ix *Index) disabledLen() int { return int(ix.disabled.Load()) }

// add indexes w; false means a webhook with its id is indexed already
// (and is left as it is).
func (ix *Index) add(w *Webhook) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if _, dup := ix.Get(w.ID); dup {
		return false
	}
	ix.insert(w)
	return true
}

// put indexes w, replacing the webhook indexed under its id if there is
// one; true means w is new to the index.
func (ix *Index) put(w *Webhook) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old, ok := ix.Get(w.ID)
	if !ok {
		ix.insert(w)
		return true
	}
	ids := cloneShard(ix.idShard(w.ID), 0)
	ids[w.ID] = w
	oldKey, newKey := keyOf(old), keyOf(w)
	switch {
	case !old.Disabled && !w.Disabled && oldKey == newKey:
		ix.relink(newKey, w.ID, w) // keeps its place in the bucket
	default:
		if !old.Disabled {
			ix.relink(oldKey, old.ID, nil)
		}
		if !w.Disabled {
			ix.relink(newKey, w.ID, w)
		}
	}
	ix.idShard(w.ID).Store(&ids)
	ix.disabled.Add(disabledDelta(w) - disabledDelta(old))
	return false
}

// remove drops the webhook with this id; false means it was not indexed.
func (ix *Index) remove(id string) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old, ok := ix.Get(id)
	if !ok {
		return false
	}
	ids := cloneShard(ix.idShard(id), 0)
	delete(ids, id)
	ix.idShard(id).Store(&ids)
	if !old.Disabled {
		ix.relink(keyOf(old), id, nil)
	}
	ix.n.Add(-1)
	ix.disabled.Add(-disabledDelta(old))
	return true
}

// insert indexes a webhook whose id is not indexed; ix.mu is held.
func (ix *Index) insert(w *Webhook) {
	ids := cloneShard(ix.idShard(w.ID), 1)
	ids[w.ID] = w
	if !w.Disabled {
		k := keyOf(w)
		bs := cloneShard(ix.keyShard(k), 1)
		old := bs[k]
		// A fresh slice, never an append: readers may hold the old one.
		next := make([]*Webhook, len(old), len(old)+1)
		copy(next, old)
		bs[k] = append(next, w)
		ix.keyShard(k).Store(&bs)
	}
	ix.idShard(w.ID).Store(&ids)
	ix.n.Add(1)
	ix.disabled.Add(disabledDelta(w))
}

// relink publishes key k's bucket with the webhook of this id taken out
// and, unless w is nil, w in its place (at the end if it was not there);
// ix.mu is held.
func (ix *Index) relink(k matchKey, id string, w *Webhook) {
	p := ix.keyShard(k)
	bs := cloneShard(p, 1)
	old := bs[k]
	next := make([]*Webhook, 0, len(old)+1)
	placed := w == nil
	for _, x := range old {
		switch {
		case x.ID != id:
			next = append(next, x)
		case !placed:
			next = append(next, w)
			placed = true
		}
	}
	if !placed {
		next = append(next, w)
	}
	if len(next) == 0 {
		delete(bs, k)
	} else {
		bs[k] = next
	}
	p.Store(&bs)
}

func disabledDelta(w *Webhook) int64 {
	if w.Disabled {
		return 1
	}
	return 0
}

// cloneShard returns a private copy of the map behind p, with room for
// extra more entries.
func cloneShard[K comparable, V any](p *atomic.Pointer[map[K]V], extra int) map[K]V {
	old := p.Load()
	if old == nil {
		return make(map[K]V, extra)
	}
	m := make(map[K]V, len(*old)+extra)
	for k, v := range *old {
		m[k] = v
	}
	return m
}

// bulkLoad fills an empty index at Open, building each shard once.
func (ix *Index) bulkLoad(all []*Webhook) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var idCount, keyCount [shardCount]int32
	for _, w := range all {
		idCount[maphash.String(ix.seed, w.ID)&(shardCount-1)]++
		keyCount[maphash.Comparable(ix.seed, keyOf(w))&(shardCount-1)]++
	}
	ids := make([]map[string]*Webhook, shardCount)
	bs := make([]map[matchKey][]*Webhook, shardCount)
	n, disabled := 0, 0
	for _, w := range all {
		i := maphash.String(ix.seed, w.ID) & (shardCount - 1)
		if ids[i] == nil {
			ids[i] = make(map[string]*Webhook, idCount[i])
		}
		if _, dup := ids[i][w.ID]; dup {
			continue
		}
		ids[i][w.ID] = w
		n++
		if w.Disabled {
			disabled++
			continue
		}
		k := keyOf(w)
		j := maphash.Comparable(ix.seed, k) & (shardCount - 1)
		if bs[j] == nil {
			bs[j] = make(map[matchKey][]*Webhook, keyCount[j])
		}
		bs[j][k] = append(bs[j][k], w)
	}
	for i := range shardCount {
		if ids[i] != nil {
			ix.byID[i].Store(&ids[i])
		}
		if bs[i] != nil {
			ix.buckets[i].Store(&bs[i])
		}
	}
	ix.n.Store(int64(n))
	ix.disabled.Store(int64(disabled))
}
