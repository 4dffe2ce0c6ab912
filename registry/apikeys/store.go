// Package apikeys keeps webhookd's run-time API keys in a JetStream
// key-value bucket shared by every instance, so that a key created or
// revoked anywhere (by `webhookd keys`, through any instance) takes effect
// everywhere within a second, without a restart.
//
// The bucket (Config.Bucket, default WEBHOOKD_KEYS) holds one Record per key
// under the key's public id: workspace, SHA-256 of the key, creation time,
// optional expiry, revocation. The plaintext key exists only in Create's
// answer. Each instance's Run follows the bucket with a watch into an
// in-memory index (hash → record), so authenticating a request is a local
// map lookup, never a network round trip.
//
// Records are never deleted by this package: a revoked or expired key stays
// as a record, which is the audit trail and what tells Issued that a
// workspace has had keys (the bootstrap key's retirement rule, see
// registry/api.KeySet). The bucket is bounded by Config.MaxBytes (the
// daemon gives it its capacity.Budget share: 1% of the store, at most
// 64 MiB, about 250,000 records) and each workspace by
// Config.MaxActivePerWorkspace active keys. Whoever can write the bucket
// can mint keys: restrict $KV.<bucket>.> to webhookd and its operators.
package apikeys

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultBucket is the bucket's name when Config.Bucket is empty.
const DefaultBucket = "WEBHOOKD_KEYS"

const (
	defaultMaxActive   = 100
	defaultMaxBytes    = 64 << 20
	defaultOpTimeout   = 10 * time.Second
	maxRestartInterval = 10 * time.Second
)

// Config configures a Store. JetStream is required; every zero value is a
// documented default.
type Config struct {
	// JetStream is the context the bucket lives in. Required.
	JetStream jetstream.JetStream
	// Bucket names the key-value bucket. Zero means DefaultBucket.
	Bucket string
	// Replicas is the bucket's replica count, 1 to 5. Zero means 1.
	Replicas int
	// MaxActivePerWorkspace caps the keys of one workspace that are
	// neither revoked nor expired; Create refuses more with
	// ErrTooManyKeys. Zero means 100.
	MaxActivePerWorkspace int
	// MaxBytes caps the bucket's size (capacity.Budget's Keys share in
	// the daemon). The server reserves it against its store when the
	// bucket is created, so it must fit what is left. At the cap Create
	// fails; existing keys keep working. Zero means 64 MiB.
	MaxBytes int64
	// Now is the clock expiry is judged by. Nil means time.Now.
	Now func() time.Time
	// Logger receives operational logs (never a key). Nil means
	// slog.Default().
	Logger *slog.Logger
	// Registerer, when set, receives webhookd_api_keys_active and
	// webhookd_api_keys_refused_total.
	Registerer prometheus.Registerer
}

// Store is the shared key bucket plus this process's index of it. Create
// it with New. A daemon drives it with Run, which fills the index that
// Resolve and Issued read; Create, List, Get and Revoke work with or
// without Run (the `webhookd keys` command uses them alone). A nil *Store
// resolves nothing and has issued nothing.
type Store struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	refused prometheus.Counter // nil without a Registerer

	bindMu sync.Mutex
	kv     jetstream.KeyValue // bound lazily by ops, or by Run

	mu     sync.RWMutex
	ix     *index // live index; complete once loaded
	loaded bool
}

// New validates cfg and registers the metrics. It does no I/O.
func New(cfg Config) (*Store, error) {
	switch {
	case cfg.JetStream == nil:
		return nil, fmt.Errorf("%w: Config.JetStream is required", ErrInvalid)
	case cfg.Replicas < 0 || cfg.Replicas > 5:
		return nil, fmt.Errorf("%w: Config.Replicas must be 1 to 5, got %d", ErrInvalid, cfg.Replicas)
	case cfg.MaxActivePerWorkspace < 0:
		return nil, fmt.Errorf("%w: Config.MaxActivePerWorkspace must not be negative", ErrInvalid)
	case cfg.MaxBytes < 0:
		return nil, fmt.Errorf("%w: Config.MaxBytes must not be negative", ErrInvalid)
	case strings.ContainsAny(cfg.Bucket, " .*>\t\n/\\"):
		return nil, fmt.Errorf("%w: Config.Bucket %q must not hold spaces, dots, wildcards or slashes", ErrInvalid, cfg.Bucket)
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxActivePerWorkspace == 0 {
		cfg.MaxActivePerWorkspace = defaultMaxActive
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = defaultMaxBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Store{cfg: cfg, log: cfg.Logger.With("component", "apikeys"), now: cfg.Now, ix: newIndex()}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.register(cfg.Registerer); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "webhookd", Name: "api_keys_active",
		Help: "Shared API keys (all workspaces) neither revoked nor expired, in this instance's copy of the key bucket.",
	}, func() float64 { return float64(s.countActive()) })
	refused := prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "webhookd", Name: "api_keys_refused_total",
		Help: "Entries of the shared key bucket ignored because they are not well-formed key records.",
	})
	if err := reg.Register(active); err != nil {
		return fmt.Errorf("apikeys: register metrics: %w", err)
	}
	if err := reg.Register(refused); err != nil {
		reg.Unregister(active)
		return fmt.Errorf("apikeys: register metrics: %w", err)
	}
	s.refused = refused
	return nil
}

// Resolve returns the workspace of an active key (neither revoked nor
// expired) from the local index. The key is hashed first, so the map
// lookup's timing says nothing about it, and the match is confirmed in
// constant time. Resolve never touches the network.
func (s *Store) Resolve(key string) (string, bool) {
	if s == nil || !LooksLikeKey(key) {
		return "", false
	}
	h := hashKey(key)
	s.mu.RLock()
	e := s.ix.byHash[h]
	s.mu.RUnlock()
	// Entries are replaced, never mutated, so e is safe to read unlocked.
	if e == nil || subtle.ConstantTimeCompare(e.hash[:], h[:]) != 1 {
		return "", false
	}
	if e.rec.StateAt(s.now()) != Active {
		return "", false
	}
	return e.rec.Workspace, true
}

// Issued reports whether a key was ever created for workspace, revoked and
// expired keys included. Until the index is loaded it answers true: not
// knowing must not re-enable a bootstrap key that a shared key retired.
func (s *Store) Issued(workspace string) bool {
	if s == nil {
		return false
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return !s.loaded || s.ix.perWorkspace[workspace] > 0
}

// Ready reports nil once Run has loaded the bucket into the index.
func (s *Store) Ready() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.loaded {
		return fmt.Errorf("%w: not loaded yet", ErrUnavailable)
	}
	return nil
}

func (s *Store) countActive() int {
	now := s.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, e := range s.ix.byID {
		if e.rec.StateAt(now) == Active {
			n++
		}
	}
	return n
}

// Run binds (creating or updating) the bucket and keeps the index in step
// with it until ctx ends, restarting the watch after errors and NATS
// reconnects. It returns nil when ctx ends and leaves no goroutine behind.
func (s *Store) Run(ctx context.Context) error {
	const firstWait = 500 * time.Millisecond
	wait := firstWait
	for ctx.Err() == nil {
		began := time.Now()
		err := s.watch(ctx)
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, errReconnected) {
			// The connection is back: replay at once.
			s.log.Info("reconnected to NATS; replaying the api key bucket")
			continue
		}
		if time.Since(began) > time.Minute {
			wait = firstWait // it ran fine for a while: this is a new incident
		}
		s.log.Warn("api key watch ended; restarting", "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		wait = min(2*wait, maxRestartInterval)
	}
	return nil
}

var errReconnected = errors.New("apikeys: reconnected to NATS")

func (s *Store) watch(ctx context.Context) error {
	setupCtx, cancel := context.WithTimeout(ctx, defaultOpTimeout)
	kv, err := s.cfg.JetStream.CreateOrUpdateKeyValue(setupCtx, s.bucketConfig())
	cancel()
	if err != nil {
		return fmt.Errorf("apikeys: bucket %s: %w", s.cfg.Bucket, err)
	}
	s.bindMu.Lock()
	s.kv = kv
	s.bindMu.Unlock()

	nc := s.cfg.JetStream.Conn()
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	w, err := kv.WatchAll(wctx)
	if err != nil {
		return fmt.Errorf("apikeys: watch: %w", err)
	}
	defer func() { _ = w.Stop() }()

	// A (re)started watch replays the bucket into a fresh index, swapped in
	// once complete, so that entries removed while this instance was away
	// do not linger. The live index keeps answering meanwhile.
	next := newIndex()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			return errReconnected
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e == nil {
				if next != nil {
					s.swap(next)
					next = nil
				}
				continue
			}
			if next != nil {
				s.applyTo(next, e)
				continue
			}
			s.mu.Lock()
			s.applyTo(s.ix, e)
			s.mu.Unlock()
		}
	}
}

func (s *Store) bucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:       s.cfg.Bucket,
		Description:  "webhookd API keys (hashes only), shared by every instance",
		History:      1,
		MaxValueSize: maxRecordBytes,
		MaxBytes:     s.cfg.MaxBytes,
		Storage:      jetstream.FileStorage,
		Replicas:     s.cfg.Replicas,
	}
}

// swap makes next the live index. A record this instance wrote while next
// was loading may be newer in the live index than in next: the newer
// revision wins. Records only the live index has are dropped; if they are
// newer than the replay, the watch delivers them next.
func (s *Store) swap(next *index) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range next.byID {
		if live := s.ix.byID[id]; live != nil && live.rev > e.rev {
			next.put(live)
		}
	}
	s.ix = next
	if !s.loaded {
		s.loaded = true
		s.log.Info("api keys loaded", "bucket", s.cfg.Bucket, "records", len(next.byID))
	}
}

// applyTo applies one watch entry to ix; the caller holds s.mu if ix is
// the live index.
func (s *Store) applyTo(ix *index, e jetstream.KeyValueEntry) {
	id := e.Key()
	if e.Operation() != jetstream.KeyValuePut {
		ix.remove(id, e.Revision())
		return
	}
	rec, err := ParseRecord(id, e.Value())
	if err != nil {
		s.log.Warn("ignoring an unreadable api key record", "key_id", safeID(id), "revision", e.Revision(), "err", err)
		if s.refused != nil {
			s.refused.Inc()
		}
		// A record that was readable before and is garbage now no longer
		// authenticates anything: fail closed.
		ix.remove(id, e.Revision())
		return
	}
	ix.put(&entry{rec: rec, hash: rec.hashBytes(), rev: e.Revision()})
}

// applyLocal puts a record this instance just wrote, so that its own next
// request sees it without waiting for the watch. Without Run (no index
// loaded) it does nothing.
func (s *Store) applyLocal(rec Record, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loaded {
		s.ix.put(&entry{rec: rec, hash: rec.hashBytes(), rev: rev})
	}
}

// safeID keeps whatever sits in a forged entry's key out of the logs
// unless it has the shape of an id.
func safeID(id string) string {
	if ValidID(id) {
		return id
	}
	return "(not an id)"
}

// entry is one indexed record; entries are immutable once indexed.
type entry struct {
	rec  Record
	hash [32]byte
	rev  uint64
}

// index is the in-memory copy of the bucket.
type index struct {
	byHash       map[[32]byte]*entry
	byID         map[string]*entry
	perWorkspace map[string]int // records, whatever their state
}

func newIndex() *index {
	return &index{byHash: map[[32]byte]*entry{}, byID: map[string]*entry{}, perWorkspace: map[string]int{}}
}

// put indexes e unless a newer revision of the same id is indexed already.
func (ix *index) put(e *entry) {
	old := ix.byID[e.rec.ID]
	if old != nil {
		if old.rev > e.rev {
			return
		}
		ix.drop(old)
	}
	if other := ix.byHash[e.hash]; other != nil {
		// Two records claiming one hash cannot come from Create; keep
		// neither rather than guess which workspace the key belongs to.
		ix.drop(other)
		return
	}
	ix.byID[e.rec.ID] = e
	ix.byHash[e.hash] = e
	ix.perWorkspace[e.rec.Workspace]++
}

// remove drops id if the indexed revision is older than rev.
func (ix *index) remove(id string, rev uint64) {
	if old := ix.byID[id]; old != nil && old.rev < rev {
		ix.drop(old)
	}
}

func (ix *index) drop(e *entry) {
	delete(ix.byID, e.rec.ID)
	if ix.byHash[e.hash] == e {
		delete(ix.byHash, e.hash)
	}
	if ix.perWorkspace[e.rec.Workspace]--; ix.perWorkspace[e.rec.Workspace] <= 0 {
		delete(ix.perWorkspace, e.rec.Workspace)
	}
}
