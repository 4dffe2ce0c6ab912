package registry

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/webhookd/webhookd/events"
)

// matchKey is what an event is matched on. WorkflowID "" is the key of
// subscriptions to every workflow.
type matchKey struct {
	workspace  string
	eventType  events.Type
	workflowID string
}

// shardCount splits the index's tables into copy-on-write shards. A write
// copies one shard, so the count keeps that copy small (about 60 entries
// at a million subscriptions) while an empty shard costs one nil pointer.
const shardCount = 1 << 14

// Index answers "which webhooks get this event" without scanning. Readers
// never lock or wait; writers are serialised (the Store's, and mu).
//
// Webhooks are stored as records in a pointer-free arena (see record.go),
// each in a numbered slot; the tables that find them are sorted arrays of
// (id, slot) and (match key hash, slot) in copy-on-write shards. None of
// it holds a pointer, so at a million subscriptions the GC has next to
// nothing to mark, and a subscription costs about a quarter of the heap a
// Webhook struct, its strings and two maps of pointers cost.
//
// Get and Match hand out *Webhook built from the record on first use and
// remembered through a weak pointer: while anyone holds the webhook
// (the dispatcher's target cache, a job in flight), every Get and Match
// returns that same pointer, and once nobody does the GC reclaims it. The
// webhook a pointer points to is never modified: a change indexes a new
// record, which gets a new pointer.
//
// Disabled webhooks are findable by id (Get finds them, so the dispatcher
// can see that a job's webhook was disabled) but in no match bucket, so
// Match never returns them and costs nothing for them.
type Index struct {
	seed     maphash.Seed
	gen      atomic.Pointer[generation]
	n        atomic.Int64
	disabled atomic.Int64
	mu       sync.Mutex // serialises writers
	scratch  []byte     // record encoding buffer (under mu)
	// compactMin is the number of dead records from which a write
	// compacts the arena, once they also outnumber the live ones.
	compactMin int
}

// generation is one arena and the tables into it. A compaction builds a
// new generation and publishes it whole; readers that loaded the old one
// finish on it, and the GC frees it after them.
type generation struct {
	arena   *arena
	recs    slab[uint64]              // slot -> record offset
	cache   slab[atomic.Pointer[pin]] // slot -> the webhook handed out
	slots   uint32                    // slots used (writer only)
	dead    int                       // slots of replaced or removed records (writer only)
	ids     [shardCount]atomic.Pointer[idShard]
	buckets [shardCount]atomic.Pointer[[]bucketEntry]
}

// pin is how a slot's webhook is held: strong for a webhook its record
// cannot reproduce exactly, weak otherwise.
type pin struct {
	strong *Webhook
	weak   weak.Pointer[Webhook]
}

// idShard is one shard of the by-id table: packed ids sorted, and the few
// ids that do not pack (see packID) in a map.
type idShard struct {
	packed []idEntry
	raw    map[string]uint32
}

type idEntry struct {
	id   [16]byte
	slot uint32
}

// bucketEntry puts a slot under the hash of its match key. Entries of one
// hash are adjacent, in match order; the rare keys whose hashes collide
// share a run, and Match checks each record's key.
type bucketEntry struct {
	hash uint64
	slot uint32
}

// defaultCompactMin: below this many dead records compaction is not
// worth its copy.
const defaultCompactMin = 1 << 14

func newIndex() *Index {
	ix := &Index{seed: maphash.MakeSeed(), compactMin: defaultCompactMin}
	ix.gen.Store(ix.newGeneration())
	return ix
}

func (ix *Index) newGeneration() *generation {
	return &generation{arena: newArena(ix.seed)}
}

func (ix *Index) keyHash(k matchKey) uint64 { return maphash.Comparable(ix.seed, k) }

func keyOf(w *Webhook) matchKey {
	return matchKey{workspace: w.Workspace, eventType: w.EventType, workflowID: w.WorkflowID}
}

// idShardOf picks the shard of an id: the random low bits of a packed
// one, a hash of any other.
func (ix *Index) idShardOf(id string) (k [16]byte, packed bool, shard uint64) {
	if k, ok := packID(id); ok {
		return k, true, (uint64(k[14])<<8 | uint64(k[15])) & (shardCount - 1)
	}
	return k, false, maphash.String(ix.seed, id) & (shardCount - 1)
}

// Match appends to dst the enabled webhooks an event of this workspace,
// type and workflow goes to: those for every workflow, then those for this
// one.
func (ix *Index) Match(workspace string, t events.Type, workflowID string, dst []*Webhook) []*Webhook {
	g := ix.gen.Load()
	dst = ix.appendKey(g, dst, matchKey{workspace, t, ""})
	if workflowID != "" {
		dst = ix.appendKey(g, dst, matchKey{workspace, t, workflowID})
	}
	return dst
}

func (ix *Index) appendKey(g *generation, dst []*Webhook, k matchKey) []*Webhook {
	h := ix.keyHash(k)
	p := g.buckets[h&(shardCount-1)].Load()
	if p == nil {
		return dst
	}
	es := *p
	for i := firstHash(es, h); i < len(es) && es[i].hash == h; i++ {
		s := es[i].slot
		_, t, ws, wf := g.arena.recordKey(*g.recs.at(s))
		if t == k.eventType && ws == k.workspace && wf == k.workflowID {
			dst = append(dst, g.webhook(s))
		}
	}
	return dst
}

// firstHash is the index of the first entry of es with hash h or more.
func firstHash(es []bucketEntry, h uint64) int {
	lo, hi := 0, len(es)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if es[m].hash < h {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Get returns the live webhook with this id, disabled or not. The webhook
// it points to is never modified: a change indexes a new one.
func (ix *Index) Get(id string) (*Webhook, bool) {
	g := ix.gen.Load()
	s, ok := ix.slotOf(g, id)
	if !ok {
		return nil, false
	}
	return g.webhook(s), true
}

// workspaceOf is the workspace of the webhook with this id, read without
// building the webhook.
func (ix *Index) workspaceOf(id string) (string, bool) {
	g := ix.gen.Load()
	s, ok := ix.slotOf(g, id)
	if !ok {
		return "", false
	}
	_, _, ws, _ := g.arena.recordKey(*g.recs.at(s))
	return ws, true
}

func (ix *Index) slotOf(g *generation, id string) (uint32, bool) {
	k, packed, shard := ix.idShardOf(id)
	sh := g.ids[shard].Load()
	if sh == nil {
		return 0, false
	}
	if !packed {
		s, ok := sh.raw[id]
		return s, ok
	}
	i, ok := findID(sh.packed, k)
	if !ok {
		return 0, false
	}
	return sh.packed[i].slot, true
}

// findID is where k is, or would be inserted, in the sorted es.
func findID(es []idEntry, k [16]byte) (int, bool) {
	khi, klo := binary.BigEndian.Uint64(k[:8]), binary.BigEndian.Uint64(k[8:])
	lo, hi := 0, len(es)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		mhi, mlo := binary.BigEndian.Uint64(es[m].id[:8]), binary.BigEndian.Uint64(es[m].id[8:])
		if mhi < khi || mhi == khi && mlo < klo {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(es) && es[lo].id == k
}

// webhook returns slot s's webhook: the one handed out before if anyone
// still holds it, else a new one from the record.
func (g *generation) webhook(s uint32) *Webhook {
	c := g.cache.at(s)
	for {
		p := c.Load()
		if p != nil {
			if p.strong != nil {
				return p.strong
			}
			if w := p.weak.Value(); w != nil {
				return w
			}
		}
		w := g.arena.decodeRecord(*g.recs.at(s), true)
		if c.CompareAndSwap(p, &pin{weak: weak.Make(w)}) {
			return w
		}
	}
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
	g := ix.gen.Load()
	if _, dup := ix.slotOf(g, w.ID); dup {
		return false
	}
	ix.insertLocked(g, w)
	return true
}

// insertLocked indexes w, whose id is not indexed yet. Caller holds ix.mu.
func (ix *Index) insertLocked(g *generation, w *Webhook) {
	s := ix.store(g, w)
	ix.setID(g, w.ID, s)
	if !w.Disabled {
		ix.link(g, ix.keyHash(keyOf(w)), s)
	}
	ix.n.Add(1)
	ix.disabled.Add(disabledDelta(w.Disabled))
}

// put indexes w, replacing the webhook indexed under its id if there is
// one; true means w is new to the index.
func (ix *Index) put(w *Webhook) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	g := ix.gen.Load()
	old, ok := ix.slotOf(g, w.ID)
	if !ok {
		ix.insertLocked(g, w)
		return true
	}
	flags, t, ws, wf := g.arena.recordKey(*g.recs.at(old))
	oldDisabled := flags&fDisabled != 0
	oldHash, newHash := ix.keyHash(matchKey{ws, t, wf}), ix.keyHash(keyOf(w))
	sameKey := matchKey{ws, t, wf} == keyOf(w)
	s := ix.store(g, w)
	ix.setID(g, w.ID, s)
	switch {
	case !oldDisabled && !w.Disabled && sameKey:
		ix.relink(g, oldHash, old, s) // keeps its place in the bucket
	default:
		if !oldDisabled {
			ix.relink(g, oldHash, old, noSlot)
		}
		if !w.Disabled {
			ix.link(g, newHash, s)
		}
	}
	ix.disabled.Add(disabledDelta(w.Disabled) - disabledDelta(oldDisabled))
	g.dead++
	ix.maybeCompact(g)
	return false
}

// remove drops the webhook with this id; false means it was not indexed.
func (ix *Index) remove(id string) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	g := ix.gen.Load()
	old, ok := ix.slotOf(g, id)
	if !ok {
		return false
	}
	flags, t, ws, wf := g.arena.recordKey(*g.recs.at(old))
	ix.setID(g, id, noSlot)
	if flags&fDisabled == 0 {
		ix.relink(g, ix.keyHash(matchKey{ws, t, wf}), old, noSlot)
	}
	ix.n.Add(-1)
	ix.disabled.Add(-disabledDelta(flags&fDisabled != 0))
	g.dead++
	ix.maybeCompact(g)
	return true
}

// noSlot, as the new slot of setID or relink, removes the entry.
const noSlot = ^uint32(0)

// store writes w's record into a new slot of g; ix.mu is held. A webhook
// its record cannot reproduce exactly is pinned as it is.
func (ix *Index) store(g *generation, w *Webhook) uint32 {
	off, exact, scratch := g.arena.appendRecord(ix.scratch, w)
	ix.scratch = scratch
	s := g.slots
	g.recs.grow(s)
	g.cache.grow(s)
	*g.recs.at(s) = off
	if !exact {
		pinned := *w
		g.cache.at(s).Store(&pin{strong: &pinned})
	}
	g.slots++
	return s
}

// setID publishes id's shard with the id at slot s (noSlot: without the
// id); ix.mu is held.
func (ix *Index) setID(g *generation, id string, s uint32) {
	k, packed, shard := ix.idShardOf(id)
	p := &g.ids[shard]
	next := &idShard{}
	if old := p.Load(); old != nil {
		*next = *old
	}
	if !packed {
		raw := make(map[string]uint32, len(next.raw)+1)
		for id, s := range next.raw {
			raw[id] = s
		}
		if s == noSlot {
			delete(raw, id)
		} else {
			raw[id] = s
		}
		next.raw = raw
		p.Store(next)
		return
	}
	i, found := findID(next.packed, k)
	es := make([]idEntry, 0, len(next.packed)+1)
	es = append(es, next.packed[:i]...)
	if s != noSlot {
		es = append(es, idEntry{id: k, slot: s})
	}
	if found {
		i++
	}
	next.packed = append(es, next.packed[i:]...)
	p.Store(next)
}

// link publishes h's bucket shard with slot s at the end of h's run;
// ix.mu is held.
func (ix *Index) link(g *generation, h uint64, s uint32) {
	p := &g.buckets[h&(shardCount-1)]
	var old []bucketEntry
	if o := p.Load(); o != nil {
		old = *o
	}
	i := firstHash(old, h+1)
	if h == ^uint64(0) {
		i = len(old)
	}
	es := make([]bucketEntry, 0, len(old)+1)
	es = append(es, old[:i]...)
	es = append(es, bucketEntry{hash: h, slot: s})
	es = append(es, old[i:]...)
	p.Store(&es)
}

// relink publishes h's bucket shard with slot old replaced by s in its
// place (noSlot: taken out); ix.mu is held.
func (ix *Index) relink(g *generation, h uint64, old, s uint32) {
	p := &g.buckets[h&(shardCount-1)]
	o := p.Load()
	if o == nil {
		return
	}
	es := make([]bucketEntry, 0, len(*o))
	for _, e := range *o {
		switch {
		case e.slot != old:
			es = append(es, e)
		case s != noSlot:
			es = append(es, bucketEntry{hash: h, slot: s})
		}
	}
	if len(es) == 0 {
		p.Store(nil)
		return
	}
	p.Store(&es)
}

func disabledDelta(disabled bool) int64 {
	if disabled {
		return 1
	}
	return 0
}
