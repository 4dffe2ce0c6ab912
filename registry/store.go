package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

const schemaVersion = "1"

var (
	bucketMeta     = []byte("meta")
	bucketWebhooks = []byte("webhooks")
	bucketFailures = []byte("failures")
	bucketAPIKeys  = []byte("apikeys")
	keySchema      = []byte("schema")
)

// Config configures a Store.
type Config struct {
	// Path of the bbolt file. Required. Its directory is created (0700).
	Path string
	// OpenTimeout bounds the wait for the file lock held by another process.
	// Zero means 2s.
	OpenTimeout time.Duration
	// MaxFailuresPerWebhook bounds the failed deliveries kept per webhook
	// (--failures-per-webhook in local mode); the oldest go first. Zero
	// means 100.
	MaxFailuresPerWebhook int
	// FailureRetention is how long a failure record is kept, by its last
	// attempt (--failure-retention in local mode). Expired records are
	// never listed, read or retried; they are deleted from a webhook's
	// records whenever it records another failure, and from every
	// webhook's by PruneFailures (at Open, and as often as the daemon
	// calls it). Zero means 30 days, failurelog's default.
	FailureRetention time.Duration
	// Registerer, when set, gets the gauges webhookd_registrations and
	// webhookd_webhooks_disabled.
	Registerer prometheus.Registerer
	// Sealer, when set, encrypts webhook secrets at rest; every secret not
	// sealed with its first key is re-sealed at Open (migration and key
	// rotation). Nil stores secrets as they are.
	Sealer *Sealer
	// Validator vets webhooks that arrive through a Journal with the API's
	// rules (see ApplyChanges); pass the API's, so both use one SSRF
	// policy. The zero value has SSRF protection on.
	Validator Validator
}

// Store persists webhooks, failed deliveries and bootstrap API keys in
// bbolt, and keeps the match Index in step with every write.
type Store struct {
	db          *bolt.DB
	sealer      *Sealer
	ix          *Index
	maxFailures int
	failureTTL  time.Duration
	count       atomic.Int64
	journal     Journal // nil: writes go straight to bbolt
	validator   Validator
	// sealedFrom is the first journal revision whose plaintext secrets
	// are refused; 0 refuses none.
	sealedFrom atomic.Uint64
	resealed   int // secrets Open re-sealed (rotation or migration)
	// wmu orders the writes that replace or delete a stored webhook with
	// their index updates, so that two changes of one webhook reach the
	// index in the order they reached bbolt. Creations do not take it
	// (nothing else can touch an id before it is created), which keeps
	// their bbolt Batch free to share fsyncs.
	wmu sync.Mutex
}

// Open opens (or creates) the registry and rebuilds the index.
func Open(cfg Config) (*Store, error) {
	if cfg.Path == "" {
		return nil, errors.New("registry: Path is required")
	}
	timeout := cfg.OpenTimeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	maxF := cfg.MaxFailuresPerWebhook
	if maxF <= 0 {
		maxF = 100
	}
	ttl := cfg.FailureRetention
	if ttl < 0 {
		return nil, fmt.Errorf("registry: FailureRetention must not be negative, got %s", ttl)
	}
	if ttl == 0 {
		ttl = DefaultFailureRetention
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{Timeout: timeout, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: could not lock %s within %s (is another webhookd running on this data dir?)", ErrLocked, cfg.Path, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: open %s: %w", cfg.Path, err)
	}
	s := &Store{db: db, sealer: cfg.Sealer, ix: newIndex(), maxFailures: maxF, failureTTL: ttl, validator: cfg.Validator}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	if _, err := s.PruneFailures(context.Background()); err != nil {
		db.Close()
		return nil, err
	}
	if cfg.Registerer != nil {
		for _, g := range []prometheus.Collector{
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "webhookd", Name: "registrations",
				Help: "Webhook subscriptions registered, all workspaces."}, func() float64 { return float64(s.Count()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "webhookd", Name: "webhooks_disabled",
				Help: "Webhooks currently disabled, all workspaces."}, func() float64 { return float64(s.ix.disabledLen()) }),
		} {
			if err := cfg.Registerer.Register(g); err != nil {
				db.Close()
				return nil, fmt.Errorf("registry: register metrics: %w", err)
			}
		}
	}
	return s, nil
}

func (s *Store) init() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		switch v := meta.Get(keySchema); {
		case v == nil:
			if err := meta.Put(keySchema, []byte(schemaVersion)); err != nil {
				return err
			}
		case string(v) != schemaVersion:
			return fmt.Errorf("registry: schema version %q is not supported by this build (want %s); use a newer webhookd", v, schemaVersion)
		}
		for _, b := range [][]byte{bucketWebhooks, bucketFailures, bucketAPIKeys} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: init: %w", err)
	}
	s.ix.mu.Lock()
	b := s.ix.newBuilder()
	n, reseal, err := s.loadAll(func(w *Webhook) { b.add(w, nil) })
	if err == nil {
		b.finish()
	}
	s.ix.mu.Unlock()
	if err != nil {
		return fmt.Errorf("registry: load: %w", err)
	}
	if len(reseal) > 0 {
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, w := range reseal {
				v, err := s.encode(*w)
				if err != nil {
					return err
				}
				if err := tx.Bucket(bucketWebhooks).Bucket([]byte(w.Workspace)).Put([]byte(w.ID), v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("registry: re-seal secrets: %w", err)
		}
	}
	s.resealed = len(reseal)
	s.count.Store(int64(n))
	settleAfterLoad(s.db, s.db.Path(), n)
	return nil
}

// ResealedAtOpen is how many secrets Open re-sealed under the first key:
// non-zero right after a key rotation or after turning encryption on,
// when a shared copy of the registry needs re-sealing too.
func (s *Store) ResealedAtOpen() int { return s.resealed }

// SealingKeyID names the key new secrets are sealed with (a short hash,
// never the key); empty when secrets are not encrypted.
func (s *Store) SealingKeyID() string {
	if s.sealer == nil {
		return ""
	}
	return s.sealer.ids[0]
}

// Close closes the bbolt file.
func (s *Store) Close() error { return s.db.Close() }

// Index is the live match index.
func (s *Store) Index() *Index { return s.ix }

// Count is the number of registered webhooks.
func (s *Store) Count() int { return int(s.count.Load()) }

// Create stores w and indexes it.
func (s *Store) Create(ctx context.Context, w Webhook) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	v, err := s.encode(w)
	if err != nil {
		return err
	}
	if s.journal != nil {
		if err := s.journal.Put(ctx, w.ID, v); err != nil {
			return fmt.Errorf("registry: create %s: %w", w.ID, err)
		}
		return nil
	}
	// Batch lets concurrent registrations share one fsync; the function is
	// idempotent, as Batch may run it more than once.
	err = s.db.Batch(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketWebhooks).CreateBucketIfNotExists([]byte(w.Workspace))
		if err != nil {
			return err
		}
		return b.Put([]byte(w.ID), v)
	})
	if err != nil {
		return fmt.Errorf("registry: create %s: %w", w.ID, err)
	}
	if s.ix.add(&w) {
		s.count.Add(1)
	}
	return nil
}

// Get returns the workspace's webhook with this id.
func (s *Store) Get(ctx context.Context, workspace, id string) (Webhook, error) {
	if err := ctx.Err(); err != nil {
		return Webhook{}, err
	}
	s.catchUp(ctx)
	var w Webhook
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketWebhooks).Bucket([]byte(workspace))
		if b == nil {
			return ErrNotFound
		}
		v := b.Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		d, _, err := s.decode(v)
		if d != nil {
			w = *d
		}
		return err
	})
	if err != nil {
		return Webhook{}, fmt.Errorf("registry: get %s: %w", id, err)
	}
	return w, nil
}

// Delete removes the workspace's webhook and its failure records. From
// the moment it returns, the index no longer matches or finds it.
func (s *Store) Delete(ctx context.Context, workspace, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.journal != nil {
		// Only the workspace's own webhooks may be deleted; the journal
		// entry names the id alone.
		if ws, ok := s.ix.workspaceOf(id); !ok || ws != workspace {
			return fmt.Errorf("registry: delete %s: %w", id, ErrNotFound)
		}
		if err := s.journal.Delete(ctx, id); err != nil {
			return fmt.Errorf("registry: delete %s: %w", id, err)
		}
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketWebhooks).Bucket([]byte(workspace))
		if b == nil {
			return ErrNotFound
		}
		if b.Get([]byte(id)) == nil {
			return ErrNotFound
		}
		if err := b.Delete([]byte(id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketFailures).DeleteBucket([]byte(id)); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: delete %s: %w", id, err)
	}
	if s.ix.remove(id) {
		s.count.Add(-1)
	}
	return nil
}

// List returns up to limit webhooks of the workspace in creation order,
// starting after cursor, and the cursor of the next page ("" on the last).
func (s *Store) List(ctx context.Context, workspace, cursor string, limit int) ([]Webhook, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	s.catchUp(ctx)
	if limit <= 0 {
		limit = 100
	}
	var after []byte
	if cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil || len(raw) == 0 || len(raw) > 64 {
			return nil, "", ErrBadCursor
		}
		after = raw
	}
	out := make([]Webhook, 0, min(limit, 128))
	next := ""
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketWebhooks).Bucket([]byte(workspace))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v := c.First()
		if after != nil {
			k, v = c.Seek(after)
			if k != nil && string(k) == string(after) {
				k, v = c.Next()
			}
		}
		for ; k != nil; k, v = c.Next() {
			if len(out) == limit {
				next = base64.RawURLEncoding.EncodeToString([]byte(out[len(out)-1].ID))
				return nil
			}
			w, _, err := s.decode(v)
			if err != nil {
				return err
			}
			out = append(out, *w)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("registry: list: %w", err)
	}
	return out, next, nil
}

// encode serialises w for bbolt, sealing its secret and previous secret
// when a Sealer is set.
func (s *Store) encode(w Webhook) ([]byte, error) {
	if s.sealer != nil {
		sealed, err := s.sealer.seal(w.Secret)
		if err != nil {
			return nil, err
		}
		w.Secret = sealed
		if w.PreviousSecret != "" {
			if w.PreviousSecret, err = s.sealer.seal(w.PreviousSecret); err != nil {
				return nil, err
			}
		}
	}
	v, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("registry: encode: %w", err)
	}
	return v, nil
}

// decode reads a stored webhook, opening its secret and previous secret;
// stale reports that either should be re-sealed (stored in plaintext or
// under an older key).
func (s *Store) decode(v []byte) (w *Webhook, stale bool, err error) {
	w = new(Webhook)
	if err := json.Unmarshal(v, w); err != nil {
		return nil, false, err
	}
	w.Secret, stale, err = s.sealer.open(w.Secret)
	if err != nil {
		return nil, false, fmt.Errorf("webhook %s: %w", w.ID, err)
	}
	if w.PreviousSecret != "" {
		var prevStale bool
		w.PreviousSecret, prevStale, err = s.sealer.open(w.PreviousSecret)
		if err != nil {
			return nil, false, fmt.Errorf("webhook %s: previous secret: %w", w.ID, err)
		}
		stale = stale || prevStale
	}
	return w, stale, nil
}

// readSyncTimeout bounds how long a read waits for the shared registry.
const readSyncTimeout = time.Second

// catchUp gives reads read-your-writes across instances: with a journal
// that can tell (replica.Replica's Sync), a read first waits, bounded,
// until this copy holds every change any instance acknowledged before the
// read began. When that cannot be confirmed (NATS unreachable) the read is
// served from the local copy: a possibly stale answer beats none.
func (s *Store) catchUp(ctx context.Context) {
	j, ok := s.journal.(interface{ Sync(context.Context) error })
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, readSyncTimeout)
	defer cancel()
	_ = j.Sync(ctx)
}
