package registry

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrUnavailable: the shared registry cannot be written right now (NATS is
// unreachable); nothing was changed. Callers may retry.
var ErrUnavailable = errors.New("registry: the shared registry is unavailable")

// keyRevision is the meta key holding the last journal revision applied.
var keyRevision = []byte("journal-revision")

// A Journal shares the registry between webhookd instances. With one set
// (UseJournal), Create and Delete do not write bbolt themselves: they
// record the change in the journal and return once the journal has
// delivered it back through ApplyChanges, as it delivers every instance's
// changes, in one order. A Journal returns ErrUnavailable (wrapped) when it
// cannot record a change.
type Journal interface {
	// Put records the webhook id with its stored bytes (as Encode makes
	// them) and returns once this Store has applied it.
	Put(ctx context.Context, id string, value []byte) error
	// Delete records the deletion of id and returns once this Store has
	// applied it.
	Delete(ctx context.Context, id string) error
}

// UseJournal routes Create and Delete through j. Call it before serving
// writes; it is not safe to change while writes are in flight.
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
}

// ApplyChanges makes the Store match a run of journal entries, in one
// bbolt transaction, and records the last entry's revision (unless it is
// 0) as the point to resume from. It is
// idempotent: applying an entry twice, or deleting an id the Store never
// had, changes nothing.
func (s *Store) ApplyChanges(changes []Change) error {
	if len(changes) == 0 {
		return nil
	}
	puts := make([]*Webhook, len(changes))
	for i, c := range changes {
		if c.Value == nil {
			continue
		}
		if _, ok := s.ix.Get(c.ID); ok {
			// Webhooks never change once created: the echo of this
			// instance's own write needs no second unseal and decode.
			continue
		}
		w, _, err := s.decode(c.Value)
		if err != nil {
			return fmt.Errorf("registry: journal entry %s: %w", c.ID, err)
		}
		if w.ID != c.ID {
			return fmt.Errorf("registry: journal entry %s holds webhook %s", c.ID, w.ID)
		}
		puts[i] = w
	}
	var added []*Webhook
	var removed []Webhook
	// One transaction (one fsync) per run: the journal's watch applies
	// changes in runs of up to thousands, which is what makes registration
	// fast; callers do not need to batch further.
	err := s.db.Update(func(tx *bolt.Tx) error {
		added, removed = added[:0], removed[:0]
		root := tx.Bucket(bucketWebhooks)
		for i, c := range changes {
			if c.ID == "" {
				continue
			}
			if c.Value != nil {
				w := puts[i]
				if w == nil {
					continue // indexed already
				}
				if _, ok := s.ix.Get(w.ID); ok {
					continue // indexed since the decode above
				}
				b, err := root.CreateBucketIfNotExists([]byte(w.Workspace))
				if err != nil {
					return err
				}
				// Two appliers of one entry (a write and its echo through
				// the watch) may both get here: Put is idempotent, and only
				// the first index add counts.
				if err := b.Put([]byte(w.ID), c.Value); err != nil {
					return err
				}
				added = append(added, w)
				continue
			}
			old, ok := s.ix.Get(c.ID)
			if !ok {
				continue
			}
			if b := root.Bucket([]byte(old.Workspace)); b != nil {
				if err := b.Delete([]byte(c.ID)); err != nil {
					return err
				}
			}
			if err := tx.Bucket(bucketFailures).DeleteBucket([]byte(c.ID)); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
				return err
			}
			removed = append(removed, *old)
		}
		last := changes[len(changes)-1].Revision
		if last == 0 {
			return nil // applied out of the journal's order: no resume point
		}
		var rev [8]byte
		binary.BigEndian.PutUint64(rev[:], last)
		return tx.Bucket(bucketMeta).Put(keyRevision, rev[:])
	})
	if err != nil {
		return fmt.Errorf("registry: apply journal: %w", err)
	}
	for _, w := range added {
		if s.ix.add(w) {
			s.count.Add(1)
		}
	}
	for i := range removed {
		if s.ix.remove(&removed[i]) {
			s.count.Add(-1)
		}
	}
	return nil
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
