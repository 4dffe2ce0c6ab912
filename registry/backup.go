package registry

import (
	"errors"
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Backup writes a consistent copy of the whole registry to w while the
// store stays in use (a bbolt read transaction sees one snapshot).
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("registry: backup: %w", err)
	}
	return n, nil
}

// FileReport summarises an offline check of a registry file.
type FileReport struct {
	Schema     string
	Workspaces int
	Webhooks   int
	Failures   int
	APIKeys    int
}

// CheckFile opens a registry file read-only (it must not be in use), runs
// bbolt's consistency check and counts what it holds. If w is not nil, it
// also writes a copy of the file there (an offline backup).
func CheckFile(path string, w io.Writer) (FileReport, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return FileReport{}, fmt.Errorf("%w: %s is in use by a running webhookd (use its --admin-addr for a hot backup)", ErrLocked, path)
	}
	if err != nil {
		return FileReport{}, fmt.Errorf("registry: open %s: %w", path, err)
	}
	defer db.Close()
	var r FileReport
	err = db.View(func(tx *bolt.Tx) error {
		var problems []error
		for err := range tx.Check() {
			problems = append(problems, err)
		}
		if len(problems) > 0 {
			return fmt.Errorf("bbolt consistency check: %w", errors.Join(problems...))
		}
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return errors.New("not a webhookd registry (no meta bucket)")
		}
		r.Schema = string(meta.Get(keySchema))
		if b := tx.Bucket(bucketWebhooks); b != nil {
			_ = b.ForEachBucket(func(ws []byte) error {
				r.Workspaces++
				r.Webhooks += b.Bucket(ws).Stats().KeyN
				return nil
			})
		}
		if b := tx.Bucket(bucketFailures); b != nil {
			_ = b.ForEachBucket(func(id []byte) error {
				r.Failures += b.Bucket(id).Stats().KeyN
				return nil
			})
		}
		if b := tx.Bucket(bucketAPIKeys); b != nil {
			r.APIKeys = b.Stats().KeyN
		}
		if w != nil {
			if _, err := tx.WriteTo(w); err != nil {
				return fmt.Errorf("copy: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return FileReport{}, fmt.Errorf("registry: check %s: %w", path, err)
	}
	return r, nil
}
