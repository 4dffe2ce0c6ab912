package registry

import (
	"bytes"
	"cmp"
	"slices"
)

// builder fills a fresh generation in one pass, building each shard once
// at the end: Open loads the registry with it, and compaction copies the
// live records into a new arena with it.
type builder struct {
	ix  *Index
	g   *generation
	ids [][]idEntry
	raw []map[string]uint32
	// dup marks the slots of ids added before (a damaged file can hold
	// one id in two workspaces); the first one added stays.
	dup []bool
}

func (ix *Index) newBuilder() *builder {
	return &builder{ix: ix, g: ix.newGeneration(), ids: make([][]idEntry, shardCount), raw: make([]map[string]uint32, shardCount)}
}

// add stores w in the next slot and returns the slot. p, when not nil, is
// how the slot's webhook is already held (compaction keeps it).
func (b *builder) add(w *Webhook, p *pin) uint32 {
	g := b.g
	off, exact, scratch := g.arena.appendRecord(b.ix.scratch, w)
	b.ix.scratch = scratch
	s := g.slots
	g.recs.grow(s)
	g.cache.grow(s)
	*g.recs.at(s) = off
	switch {
	case p != nil:
		g.cache.at(s).Store(p)
	case !exact:
		pinned := *w
		g.cache.at(s).Store(&pin{strong: &pinned})
	}
	g.slots++
	b.dup = append(b.dup, false)
	k, packed, shard := b.ix.idShardOf(w.ID)
	if packed {
		b.ids[shard] = append(b.ids[shard], idEntry{id: k, slot: s})
		return s
	}
	if b.raw[shard] == nil {
		b.raw[shard] = make(map[string]uint32)
	}
	if _, ok := b.raw[shard][w.ID]; ok {
		b.dup[s] = true
	} else {
		b.raw[shard][w.ID] = s
	}
	return s
}

// finish publishes the generation as the index's, with its counts.
func (b *builder) finish() {
	g := b.g
	for i, es := range b.ids {
		if len(es) == 0 && b.raw[i] == nil {
			continue
		}
		slices.SortStableFunc(es, func(x, y idEntry) int { return bytes.Compare(x.id[:], y.id[:]) })
		kept := es[:0]
		for j, e := range es {
			if j > 0 && e.id == es[j-1].id {
				b.dup[e.slot] = true
				continue
			}
			kept = append(kept, e)
		}
		// Copied to their size: the appends left up to half unused.
		g.ids[i].Store(&idShard{packed: slices.Clone(kept), raw: b.raw[i]})
	}
	buckets := make([][]bucketEntry, shardCount)
	n, disabled := 0, 0
	for s := range g.slots {
		if b.dup[s] {
			g.dead++
			continue
		}
		n++
		flags, t, ws, wf := g.arena.recordKey(*g.recs.at(s))
		if flags&fDisabled != 0 {
			disabled++
			continue
		}
		h := b.ix.keyHash(matchKey{ws, t, wf})
		buckets[h&(shardCount-1)] = append(buckets[h&(shardCount-1)], bucketEntry{hash: h, slot: s})
	}
	for i, es := range buckets {
		if len(es) == 0 {
			continue
		}
		slices.SortStableFunc(es, func(x, y bucketEntry) int { return cmp.Compare(x.hash, y.hash) })
		es = slices.Clone(es)
		g.buckets[i].Store(&es)
	}
	b.ix.gen.Store(g)
	b.ix.n.Store(int64(n))
	b.ix.disabled.Store(int64(disabled))
}

// bulkLoad fills an empty index.
func (ix *Index) bulkLoad(all []*Webhook) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	b := ix.newBuilder()
	for _, w := range all {
		b.add(w, nil)
	}
	b.finish()
}

// maybeCompact copies g's live records into a new arena once replaced and
// removed ones outnumber them: the arena never holds more than about
// twice what is live. It holds up writers (never readers) for about a
// second at a million subscriptions, once per million changes. ix.mu is
// held.
func (ix *Index) maybeCompact(g *generation) {
	if g.dead < ix.compactMin || g.dead <= int(g.slots)-g.dead {
		return
	}
	ix.compact(g)
}

// compact rebuilds the index from old's live records. Records are copied
// bucket by bucket, so match order stays as it was, and each keeps the
// webhook handed out for it: a holder of one still gets the same pointer.
func (ix *Index) compact(old *generation) {
	b := ix.newBuilder()
	moved := make([]uint32, old.slots)
	for i := range moved {
		moved[i] = noSlot
	}
	visit := func(s uint32) {
		if moved[s] != noSlot {
			return
		}
		p := old.cache.at(s).Load()
		w := old.arena.decodeRecord(*old.recs.at(s), false)
		if p != nil && p.strong != nil {
			w = p.strong
		}
		moved[s] = b.add(w, p)
	}
	for i := range old.buckets {
		if p := old.buckets[i].Load(); p != nil {
			for _, e := range *p {
				visit(e.slot)
			}
		}
	}
	for i := range old.ids {
		if sh := old.ids[i].Load(); sh != nil {
			for _, e := range sh.packed {
				visit(e.slot)
			}
			for _, s := range sh.raw {
				visit(s)
			}
		}
	}
	b.finish()
	// A reader still on the old generation may have handed out a webhook
	// after its slot was copied; keep that one too. One that does so after
	// this pass read its slot hands out a webhook the new generation does
	// not know, and Get then builds another, equal one: a holder comparing
	// pointers (the dispatcher's target cache) sees a change and rebuilds
	// what it derived, which is extra work, never a wrong answer.
	for s, ns := range moved {
		if ns == noSlot {
			continue
		}
		if p := old.cache.at(uint32(s)).Load(); p != nil {
			b.g.cache.at(ns).CompareAndSwap(nil, p)
		}
	}
}
