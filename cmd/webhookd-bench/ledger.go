package main

import (
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// ledger accounts for one scenario's deliveries. Every (event,
// subscription) pair has a slot holding a hash of the first webhook-id it
// arrived with, so a delivery is classified as new or duplicate by pair,
// and a second webhook-id for the same pair (the contract says it is
// stable) or one webhook-id for two pairs is caught. Memory is 8 bytes per
// pair.
type ledger struct {
	events int // sequence numbers 0..events-1 were generated
	seed   maphash.Seed
	subs   []subLedger
	ids    [64]idShard

	lat         histogram    // counted subscriptions' first deliveries
	counted     atomic.Int64 // unique deliveries to counted subscriptions
	lastArrival atomic.Int64 // unix nanos of the latest counted first delivery

	badSignature atomic.Int64
	unexpected   atomic.Int64 // unknown subscription or sequence, undecodable body
	bodyMismatch atomic.Int64 // decodable but not the bytes published
	unstableID   atomic.Int64 // one pair, two webhook-ids
	reusedID     atomic.Int64 // one webhook-id, two pairs
}

type subLedger struct {
	counted bool // healthy: must receive every event
	mu      sync.Mutex
	ids     []uint64 // per sequence: webhook-id hash (0: not yet)
	unique  int64
	dups    int64
}

type idShard struct {
	mu   sync.Mutex
	seen map[uint64]struct{}
}

// newLedger covers events sequence numbers for each subscription;
// counted[i] says whether subscription i must receive every event.
func newLedger(events int, counted []bool) *ledger {
	l := &ledger{events: events, seed: maphash.MakeSeed(), subs: make([]subLedger, len(counted))}
	for i, c := range counted {
		l.subs[i].counted = c
		l.subs[i].ids = make([]uint64, events)
	}
	for i := range l.ids {
		l.ids[i].seen = make(map[uint64]struct{})
	}
	return l
}

// outcome is what record made of one delivery.
type outcome int

const (
	outFirst outcome = iota
	outDuplicate
	outRejected // void-making: unexpected, unstable or reused id
)

// record books a delivery of event seq to subscription sub with
// webhook-id id, sent (scheduled) at sentAt and received at now. The
// signature and body were checked by the caller.
func (l *ledger) record(sub, seq int, id string, sentAt, now time.Time) outcome {
	if sub < 0 || sub >= len(l.subs) || seq < 0 || seq >= l.events || id == "" {
		l.unexpected.Add(1)
		return outRejected
	}
	h := maphash.String(l.seed, id) | 1 // 0 marks an empty slot
	s := &l.subs[sub]
	s.mu.Lock()
	prev := s.ids[seq]
	if prev == 0 {
		s.ids[seq] = h
		s.unique++
	} else {
		s.dups++
	}
	s.mu.Unlock()
	if prev != 0 {
		if prev != h {
			l.unstableID.Add(1)
			return outRejected
		}
		return outDuplicate
	}
	sh := &l.ids[h%uint64(len(l.ids))]
	sh.mu.Lock()
	_, reused := sh.seen[h]
	sh.seen[h] = struct{}{}
	sh.mu.Unlock()
	if reused {
		l.reusedID.Add(1)
		return outRejected
	}
	if s.counted {
		l.lat.record(now.Sub(sentAt))
		l.counted.Add(1)
		for {
			last := l.lastArrival.Load()
			if now.UnixNano() <= last || l.lastArrival.CompareAndSwap(last, now.UnixNano()) {
				break
			}
		}
	}
	return outFirst
}

// subCounts is subscription i's distinct and repeated deliveries so far.
func (l *ledger) subCounts(i int) (unique, dups int64) {
	s := &l.subs[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unique, s.dups
}

// Tally is a scenario's closing account.
type Tally struct {
	Generated int   `json:"generated"` // events handed to the publisher
	Published int   `json:"published"` // of which JetStream acked
	Fanout    int   `json:"fanout"`    // counted subscriptions per event
	Expected  int64 `json:"expected"`  // Published × Fanout
	Unique    int64 `json:"unique"`    // distinct pairs received, counted subscriptions
	Lost      int64 `json:"lost"`      // counted pairs of published events never received
	// Duplicates are repeat deliveries of a pair to counted subscriptions
	// (allowed: at-least-once).
	Duplicates    int64 `json:"duplicates"`
	BadSignatures int64 `json:"badSignatures"`
	Unexpected    int64 `json:"unexpected"`
	BodyMismatch  int64 `json:"bodyMismatch"`
	UnstableIDs   int64 `json:"unstableIds"`
	ReusedIDs     int64 `json:"reusedIds"`
}

// tally closes the books: published of the generated events were acked.
// Lost is counted slot by slot, independently of Unique, so that the
// balance below is a real check and not arithmetic.
func (l *ledger) tally(generated, published int) Tally {
	t := Tally{Generated: generated, Published: published}
	for i := range l.subs {
		s := &l.subs[i]
		if !s.counted {
			continue
		}
		t.Fanout++
		s.mu.Lock()
		t.Unique += s.unique
		t.Duplicates += s.dups
		for seq := 0; seq < published && seq < len(s.ids); seq++ {
			if s.ids[seq] == 0 {
				t.Lost++
			}
		}
		s.mu.Unlock()
	}
	t.Expected = int64(published) * int64(t.Fanout)
	t.BadSignatures = l.badSignature.Load()
	t.Unexpected = l.unexpected.Load()
	t.BodyMismatch = l.bodyMismatch.Load()
	t.UnstableIDs = l.unstableID.Load()
	t.ReusedIDs = l.reusedID.Load()
	return t
}

// VoidReasons lists why the run cannot be trusted; empty means the ledger
// balances (published × fan-out = unique + lost) and every delivery was
// genuine. Lost deliveries alone do not void a run: they are its result.
func (t Tally) VoidReasons() []string {
	var why []string
	add := func(n int64, format string) {
		if n != 0 {
			why = append(why, fmt.Sprintf(format, n))
		}
	}
	add(int64(t.Generated-t.Published), "%d publishes were not acknowledged by JetStream")
	if t.Expected != t.Unique+t.Lost {
		why = append(why, fmt.Sprintf("ledger does not balance: published %d × fan-out %d = %d, but received %d + lost %d = %d",
			t.Published, t.Fanout, t.Expected, t.Unique, t.Lost, t.Unique+t.Lost))
	}
	add(t.BadSignatures, "%d deliveries failed signature verification")
	add(t.Unexpected, "%d deliveries matched no published event or subscription")
	add(t.BodyMismatch, "%d deliveries carried a body other than the one published")
	add(t.UnstableIDs, "%d repeat deliveries of an (event, subscription) pair changed webhook-id")
	add(t.ReusedIDs, "%d webhook-ids were used for two different (event, subscription) pairs")
	return why
}
