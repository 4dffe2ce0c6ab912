package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// errUnchanged, returned by an update's change function, means the webhook
// already is as asked: nothing is written and the update reports false.
var errUnchanged = errors.New("registry: unchanged")

// Disable stops the webhook from matching events, recording why (one of
// the Disabled* reasons; "" means DisabledManual) and when. It takes no
// workspace because the dispatcher, not a client, calls it. The bool is
// false when the webhook was disabled already: nothing is written and the
// webhook is returned as it is, first reason and time kept. Unknown ids
// give ErrNotFound.
func (s *Store) Disable(ctx context.Context, id, reason string, at time.Time) (Webhook, bool, error) {
	if reason == "" {
		reason = DisabledManual
	}
	w, changed, err := s.update(ctx, id, func(w *Webhook) error {
		if w.Disabled {
			return errUnchanged
		}
		w.Disabled, w.DisabledReason, w.DisabledAt = true, reason, at.UTC().Truncate(time.Millisecond)
		return nil
	})
	if err != nil {
		return Webhook{}, false, fmt.Errorf("registry: disable %s: %w", id, err)
	}
	return w, changed, nil
}

// Enable turns the workspace's webhook back on; enabling an enabled one
// changes nothing. Ids of other workspaces give ErrNotFound, like unknown
// ones.
func (s *Store) Enable(ctx context.Context, workspace, id string) (Webhook, error) {
	if ws, ok := s.ix.workspaceOf(id); !ok || ws != workspace {
		// Answered here, so that probing for other workspaces' ids costs
		// no journal round trip; change checks again on the journal's copy.
		return Webhook{}, fmt.Errorf("registry: enable %s: %w", id, ErrNotFound)
	}
	w, _, err := s.update(ctx, id, func(w *Webhook) error {
		if w.Workspace != workspace {
			return ErrNotFound
		}
		if !w.Disabled {
			return errUnchanged
		}
		w.Disabled, w.DisabledReason, w.DisabledAt = false, "", time.Time{}
		return nil
	})
	if err != nil {
		return Webhook{}, fmt.Errorf("registry: enable %s: %w", id, err)
	}
	return w, nil
}

// update is the one read-modify-write path for a stored webhook (Disable,
// Enable, and whatever else changes a webhook after its creation): change
// edits a copy of the current webhook, or returns errUnchanged, or an
// error that aborts. With a journal, change runs on the journal's current
// bytes, so every instance applies the result in one order; without, on
// bbolt's, in one transaction. It returns the webhook as it now is and
// whether anything was written. The id and workspace must not change.
func (s *Store) update(ctx context.Context, id string, change func(*Webhook) error) (Webhook, bool, error) {
	if err := ctx.Err(); err != nil {
		return Webhook{}, false, err
	}
	curWS, ok := s.ix.workspaceOf(id)
	if !ok {
		return Webhook{}, false, ErrNotFound
	}
	apply := func(v []byte) (w *Webhook, nv []byte, err error) {
		w, _, err = s.decode(v)
		if err != nil {
			return nil, nil, err
		}
		ws := w.Workspace
		switch err := change(w); {
		case errors.Is(err, errUnchanged):
			return w, nil, nil
		case err != nil:
			return nil, nil, err
		}
		if w.ID != id || w.Workspace != ws {
			return nil, nil, errors.New("registry: an update may not change a webhook's id or workspace")
		}
		nv, err = s.encode(*w)
		return w, nv, err
	}
	if s.journal != nil {
		var out Webhook
		var changed bool
		err := s.journal.Update(ctx, id, func(v []byte) ([]byte, error) {
			w, nv, err := apply(v)
			if err != nil {
				return nil, err
			}
			out, changed = *w, nv != nil
			return nv, nil
		})
		if err != nil {
			return Webhook{}, false, err
		}
		return out, changed, nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var next *Webhook
	var changed bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketWebhooks).Bucket([]byte(curWS))
		if b == nil {
			return ErrNotFound
		}
		v := b.Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		w, nv, err := apply(v)
		if err != nil {
			return err
		}
		next, changed = w, nv != nil
		if !changed {
			return nil
		}
		return b.Put([]byte(id), nv)
	})
	if err != nil {
		return Webhook{}, false, err
	}
	if changed {
		s.ix.put(next)
	}
	return *next, changed, nil
}
