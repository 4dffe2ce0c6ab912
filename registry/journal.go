package registry

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrUnavailable: the shared registry cannot be written right now (NATS is
// unreachable); nothing was changed. Callers may retry.
var ErrUnavailable = errors.New("registry: the shared registry is unavailable")

// keyRevision is the meta key holding the last journal revision applied.
var keyRevision = []byte("journal-revision")

// A Journal shares the registry between webhookd instances. With one set
// (UseJournal), Create, Delete, Disable and Enable do not write bbolt
// themselves: they record the change in the journal and return once the
// journal has delivered it back through ApplyChanges, as it delivers every
// instance's changes, in one order. A Journal returns ErrUnavailable
// (wrapped) when it cannot record a change.
type Journal interface {
	// Put records the new webhook id with its stored bytes (as Encode
	// makes them) and returns once this Store has applied it.
	Put(ctx context.Context, id string, value []byte) error
	// Update replaces the stored bytes of the existing webhook id with
	// what change makes of the journal's current ones, and returns once
	// this Store has applied the result. It is compare-and-swap: when
	// another write or a deletion of id lands in between, change runs
	// again on the newer bytes, so an update can neither undo a concurrent
	// change nor bring a deleted webhook back. change returning nil bytes
	// writes nothing. Update returns ErrNotFound (wrapped) when the
	// journal has no webhook id, and change's own errors as they are.
	Update(ctx context.Context, id string, change func(current []byte) ([]byte, error)) error
	// Delete records the deletion of id and returns once this Store has
	// applied it.
	Delete(ctx context.Context, id string) error
}

// UseJournal routes Create, Delete, Disable and Enable through j. Call it
// before serving writes; it is not safe to change while writes are in
// flight.
func (s *Store) UseJournal(j Journal) { s.journal = j }

// Encode returns w as this Store keeps it, secret sealed when a Sealer is
// set: the bytes a Journal carries.
func (s *Store) Encode(w Webhook) ([]byte, error) { return s.encode(w) }

// Change is one journal entry: a webhook's stored bytes, or its deletion
// when Value is nil. An entry with an empty ID changes nothing but still
// counts as applied (its revision is recorded).
type Change struct {
	ID       string
	Value    []byte
	Revision uint64
	// Direct marks an entry applied out of the journal's order (ahead of
	// the watch): its Revision is not recorded as the point to resume
	// from. The Store does not compare revisions (it keeps none per
	// webhook); the journal must not hand it an entry older than what it
	// already applied.
	Direct bool
}

// ApplyChanges makes the Store match a run of journal entries, in one
// bbolt transaction, and records the last entry's revision (unless it is
// 0) as the point to resume from, or the revision before the run's first
// entry refused as sealed: a restart must read that entry again, since
// nothing else remembers that the copy lacks it. A value for an id the
// Store has replaces that webhook (an update). It is idempotent: applying
// an entry twice, or deleting an id the Store never had, changes nothing.
//
// Each value is decoded and held to the API's rules first (see Refusal):
// an invalid one is applied as a deletion of its id, one sealed with an
// unknown key changes nothing. Both are returned, in order; the error is
// for bbolt failures only, after which nothing was applied.
func (s *Store) ApplyChanges(changes []Change) ([]Refusal, error) {
	return s.ApplyChangesHolding(changes, 0)
}

// ApplyChangesHolding is ApplyChanges for a journal that still lacks an
// entry an earlier run refused as sealed, the oldest at revision hold (0:
// none): the resume point it records stays below hold, so that a restart
// reads the entry again and knows its copy is incomplete, instead of
// resuming past it.
func (s *Store) ApplyChangesHolding(changes []Change, hold uint64) ([]Refusal, error) {
	if len(changes) == 0 {
		return nil, nil
	}
	// Held across the transaction and the index updates: two appliers of
	// one webhook (the watch and a write applying its own change) must
	// reach the index in the order they reached bbolt.
	s.wmu.Lock()
	defer s.wmu.Unlock()
	puts, refused, err := s.decodeChanges(changes)
	if err != nil {
		return nil, err
	}
	// after is each touched id's webhook once the run is applied (nil:
	// deleted), so that later entries of a run see the earlier ones.
	after := make(map[string]*Webhook)
	var order []string
	// gone marks, in after, a webhook this run deletes.
	gone := new(Webhook)
	// One transaction (one fsync) per run: the journal's watch applies
	// changes in runs of up to thousands, which is what makes registration
	// fast; callers do not need to batch further.
	err = s.db.Update(func(tx *bolt.Tx) error {
		clear(after)
		order = order[:0]
		// workspace is where id is stored as of the run's earlier
		// entries; false when nowhere.
		workspace := func(id string) (string, bool) {
			if w, ok := after[id]; ok {
				return w.Workspace, w != gone
			}
			return s.ix.workspaceOf(id)
		}
		set := func(id string, w *Webhook) {
			if _, ok := after[id]; !ok {
				order = append(order, id)
			}
			after[id] = w
		}
		root := tx.Bucket(bucketWebhooks)
		for i, c := range changes {
			if c.ID == "" {
				continue
			}
			oldWS, had := workspace(c.ID)
			if c.Value != nil && puts[i] == errSealedEntry {
				continue // not ours to open: the copy stays as it was
			}
			if c.Value != nil && puts[i] != errInvalidEntry {
				w := puts[i]
				if w == nil {
					continue // bbolt and the index hold these bytes already
				}
				if had && oldWS != w.Workspace {
					if b := root.Bucket([]byte(oldWS)); b != nil {
						if err := b.Delete([]byte(c.ID)); err != nil {
							return err
						}
					}
				}
				b, err := root.CreateBucketIfNotExists([]byte(w.Workspace))
				if err != nil {
					return err
				}
				if err := b.Put([]byte(w.ID), c.Value); err != nil {
					return err
				}
				set(c.ID, w)
				continue
			}
			if !had {
				continue
			}
			if b := root.Bucket([]byte(oldWS)); b != nil {
				if err := b.Delete([]byte(c.ID)); err != nil {
					return err
				}
			}
			if err := tx.Bucket(bucketFailures).DeleteBucket([]byte(c.ID)); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
				return err
			}
			set(c.ID, gone)
		}
		last := changes[len(changes)-1].Revision
		if last == 0 || changes[len(changes)-1].Direct {
			return nil // applied out of the journal's order: no resume point
		}
		var rev [8]byte
		binary.BigEndian.PutUint64(rev[:], resumePoint(changes, puts, last, hold))
		return tx.Bucket(bucketMeta).Put(keyRevision, rev[:])
	})
	if err != nil {
		return nil, fmt.Errorf("registry: apply journal: %w", err)
	}
	for _, id := range order {
		if w := after[id]; w != gone {
			if s.ix.put(w) {
				s.count.Add(1)
			}
		} else if s.ix.remove(id) {
			s.count.Add(-1)
		}
	}
	return refused, nil
}

// resumePoint is the revision a run records as applied: its last, but
// below the first entry it refused as sealed and below hold (see
// ApplyChangesHolding). It may be 0, which makes the next start read the
// journal whole.
func resumePoint(changes []Change, puts []*Webhook, last, hold uint64) uint64 {
	for i, c := range changes {
		if c.Value != nil && puts[i] == errSealedEntry && c.Revision > 0 {
			if hold == 0 || c.Revision < hold {
				hold = c.Revision
			}
			break
		}
	}
	if hold > 0 && hold <= last {
		return hold - 1
	}
	return last
}

// Markers decodeChanges leaves for refused values: an invalid entry is
// applied as a deletion, a sealed one not at all.
var (
	errInvalidEntry = new(Webhook)
	errSealedEntry  = new(Webhook)
)

// decodeChanges decodes and vets the values of a run of journal entries;
// it leaves nil for deletions and for values bbolt already holds byte for
// byte (the echo of a change this Store applied itself, or a whole journal
// replayed over an existing copy), which then need no unseal and decode,
// and a marker for each refused value. Decoding happens before the write
// transaction so that it does not hold up other writers.
func (s *Store) decodeChanges(changes []Change) ([]*Webhook, []Refusal, error) {
	puts := make([]*Webhook, len(changes))
	var refused []Refusal
	var touched map[string]struct{} // ids an earlier entry of the run changes
	err := s.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketWebhooks)
		for i, c := range changes {
			if c.ID == "" {
				continue
			}
			_, again := touched[c.ID]
			if touched == nil {
				touched = make(map[string]struct{}, len(changes))
			}
			touched[c.ID] = struct{}{}
			if c.Value == nil {
				continue
			}
			if ws, ok := s.ix.workspaceOf(c.ID); ok && !again {
				if b := root.Bucket([]byte(ws)); b != nil && bytes.Equal(b.Get([]byte(c.ID)), c.Value) {
					continue
				}
			}
			w, r := s.checkEntry(c)
			if r != nil {
				refused = append(refused, *r)
				w = errInvalidEntry
				if r.Reason == RefusedSealed {
					w = errSealedEntry
				}
			}
			puts[i] = w
		}
		return nil
	})
	return puts, refused, err
}

// JournalRevision is the last journal revision ApplyChanges recorded; 0
// before the first.
func (s *Store) JournalRevision() (uint64, error) {
	var rev uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyRevision); len(v) == 8 {
			rev = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return rev, err
}

// IDs calls fn with every stored webhook's id and stored bytes, for a
// journal's first synchronisation.
func (s *Store) IDs(fn func(id string, value []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket(bucketWebhooks)
		return root.ForEachBucket(func(ws []byte) error {
			return root.Bucket(ws).ForEach(func(k, v []byte) error {
				return fn(string(k), v)
			})
		})
	})
}

// keyCurrentAt is the meta key holding when this Store last knew it had
// applied the whole journal.
var keyCurrentAt = []byte("journal-current-at")

// MarkJournalCurrent records that the Store had applied the whole journal
// at t. A journal whose deletions expire uses it on restart to tell a
// short absence (resume) from a long one (read everything again).
func (s *Store) MarkJournalCurrent(t time.Time) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(t.UnixNano()))
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyCurrentAt, v[:]) })
	if err != nil {
		return fmt.Errorf("registry: mark journal current: %w", err)
	}
	return nil
}

// JournalCurrentAt is the time MarkJournalCurrent last recorded; zero if
// never.
func (s *Store) JournalCurrentAt() (time.Time, error) {
	var t time.Time
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyCurrentAt); len(v) == 8 {
			t = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
		}
		return nil
	})
	return t, err
}
