// Package replica shares the webhook registry between webhookd instances
// through a JetStream key-value bucket, so that every instance on one NATS
// cluster fans events out to, and delivers for, the same subscriptions.
//
// The bucket is the shared log; each instance's bbolt file is its local
// copy. A registration, change (disable, enable) or deletion is written to
// the bucket first and reaches every instance's Store, the writer's
// included, through one ordered watch, so all copies apply the same
// changes in the same order. Changes are compare-and-swap on the key's
// revision, so concurrent ones do not undo each other and none revives a
// deleted webhook.
// The last revision applied is kept in bbolt, so a restart resumes where it
// stopped instead of reading the whole bucket again. The first start with
// replication publishes any subscriptions the local file already had.
//
// Secrets travel as the Store keeps them: sealed when --encryption-key is
// set, which then must open every entry on every instance. The bucket's
// sealing marker names the key it is sealed with and the keys it was
// sealed with before (marker.go). Once ready, an instance re-seals the
// bucket with its first key when the marker is missing or migrating
// (encryption turned on), names another key, or some entry may still be
// sealed with another; never when the marker lists its first key as
// retired, so an instance left behind by a rotation cannot undo it
// (reseal.go).
//
// The bucket is not trusted: every entry is held to the API's rules before
// it is applied (registry.Refusal), and an entry this instance cannot open
// makes it not ready instead of being skipped (trust.go), across restarts
// too: the resume point never passes it. Sync is the
// read-your-writes barrier fan-out waits on (sync.go); delete markers are
// compacted after a grace period, and an instance away for longer than
// that reads the bucket whole again (compact.go).
package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/registry"
)

// Config wires a Replica.
type Config struct {
	// JetStream reaches the NATS cluster. Required.
	JetStream jetstream.JetStream
	// Store is this instance's registry. Required.
	Store *registry.Store
	// Bucket names the key-value bucket. Empty means "WEBHOOKD_REGISTRY".
	Bucket string
	// Replicas of the bucket in a NATS cluster. Zero means 1.
	Replicas int
	// MaxBytes caps the bucket's stream (its share of the store, see
	// dispatcher/capacity). Zero means no limit. At the limit registrations
	// and deletions fail with registry.ErrUnavailable; nothing is dropped.
	MaxBytes int64
	// WriteTimeout bounds one write to the bucket. Zero means 10s.
	WriteTimeout time.Duration
	// TombstoneGrace is how long a deletion's marker stays in the bucket
	// before it is compacted away. An instance that was away for more than
	// half of it reads the whole bucket again on return instead of resuming
	// (it may have missed deletions). Zero means 24h.
	TombstoneGrace time.Duration
	// CompactInterval is how often delete markers older than
	// TombstoneGrace are compacted. Zero means 1h; negative never compacts.
	CompactInterval time.Duration
	// Logger receives sync progress and problems; nil discards them.
	Logger *slog.Logger
	// Registerer, when set, gets webhookd_registry_entries_refused_total,
	// webhookd_registry_entries_blocked and
	// webhookd_registry_tombstones_compacted_total.
	Registerer prometheus.Registerer
}

// Replica is a registry.Journal backed by a key-value bucket. Run keeps
// the Store in step with the bucket.
type Replica struct {
	cfg     Config
	log     *slog.Logger
	kv      atomic.Pointer[jetstream.KeyValue]
	synced  atomic.Bool
	running atomic.Bool
	// settling is set while a watch that reads the whole bucket has not
	// yet settled the webhooks only the local copy has (settleLocalOnly);
	// until then the copy may hold deleted webhooks, so Sync waits.
	settling atomic.Bool

	mu       sync.Mutex
	deleting map[string]struct{} // deleted here, deletion not yet seen by the watch
	applied  chan struct{}       // closed after every batch the watch applies, then replaced

	// applyMu orders the watch's batches with the changes this instance
	// applies out of the watch's order (a write whose echo is late, a
	// Lookup), so that neither can overwrite a newer state with an older.
	applyMu sync.Mutex
	// watched is the last revision the watch applied (written under
	// applyMu).
	watched atomic.Uint64
	// ahead maps ids applied out of order to the revision applied; the
	// watch passes over their older entries until it reaches that
	// revision (under applyMu).
	ahead map[string]uint64

	// blocked holds the entries this instance cannot open (sealed with a
	// key it was not given), by id; while any is held the instance is not
	// ready and Sync fails (under mu).
	blocked map[string]registry.Refusal
	// sealedMarker is the bucket's sealing marker value (markerKey, read
	// with parseMarker); empty while absent.
	sealedMarker  atomic.Pointer[string]
	markerArrived bool // set by the watch's goroutine only (change), read after its apply
	m             metrics
}

// New validates cfg and returns a Replica; nothing happens until Run.
func New(cfg Config) (*Replica, error) {
	if cfg.JetStream == nil || cfg.Store == nil {
		return nil, errors.New("replica: JetStream and Store are required")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = "WEBHOOKD_REGISTRY"
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Replicas < 0 || cfg.WriteTimeout < 0 || cfg.TombstoneGrace < 0 || cfg.MaxBytes < 0 {
		return nil, errors.New("replica: Replicas, WriteTimeout and TombstoneGrace must not be negative")
	}
	if cfg.TombstoneGrace == 0 {
		cfg.TombstoneGrace = 24 * time.Hour
	}
	if cfg.CompactInterval == 0 {
		cfg.CompactInterval = time.Hour
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Replica{cfg: cfg, log: log.With("component", "replica"), deleting: make(map[string]struct{}),
		applied: make(chan struct{}), ahead: make(map[string]uint64), blocked: make(map[string]registry.Refusal)}
	if err := r.m.register(cfg.Registerer, r.blockedCount); err != nil {
		return nil, err
	}
	return r, nil
}

// Ready reports nil once the Store has caught up with the bucket and holds
// every entry of it.
func (r *Replica) Ready() error {
	if !r.synced.Load() || r.settling.Load() {
		return errors.New("registry is not in sync with the shared registry yet")
	}
	return r.stuck()
}

// echoWait is how long a write waits for its own change to come back
// through the watch, which applies it in order and in batches with
// others, before applying it itself.
const echoWait = 2 * time.Second

// Put records a new webhook in the bucket and returns once this Store has
// it: normally when the watch brings it back, or after echoWait by
// applying it directly, so a lagging watch delays a registration but never
// fails it.
func (r *Replica) Put(ctx context.Context, id string, value []byte) error {
	kv, err := r.bucket()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.WriteTimeout)
	defer cancel()
	rev, err := kv.Create(ctx, id, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		// A retried registration: what the bucket holds is the truth.
		var e jetstream.KeyValueEntry
		if e, err = kv.Get(ctx, id); err == nil {
			rev, value = e.Revision(), e.Value()
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %v", registry.ErrUnavailable, err)
	}
	if r.await(ctx, func() bool { return r.watched.Load() >= rev }) {
		return nil
	}
	return r.applyDirect(registry.Change{ID: id, Value: value, Revision: rev})
}

// maxUpdateTries bounds the compare-and-swap rounds of one Update; each
// lost round means another instance changed the same webhook meanwhile.
const maxUpdateTries = 16

// Update replaces an existing webhook's bytes with change(current) as a
// compare-and-swap on the bucket's revision of it, and returns once this
// Store has the result, like Put. A webhook deleted meanwhile is
// registry.ErrNotFound, never brought back.
func (r *Replica) Update(ctx context.Context, id string, change func(current []byte) ([]byte, error)) error {
	kv, err := r.bucket()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.WriteTimeout)
	defer cancel()
	for range maxUpdateTries {
		e, err := kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("replica: update %s: %w", id, registry.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("%w: %v", registry.ErrUnavailable, err)
		}
		value, err := change(e.Value())
		if err != nil || value == nil {
			return err
		}
		rev, err := kv.Update(ctx, id, value, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%w: %v", registry.ErrUnavailable, err)
		}
		if r.await(ctx, func() bool { return r.watched.Load() >= rev }) {
			return nil
		}
		return r.applyDirect(registry.Change{ID: id, Value: value, Revision: rev})
	}
	return fmt.Errorf("%w: webhook %s changed %d times while being updated", registry.ErrUnavailable, id, maxUpdateTries)
}

// applyDirect applies an entry of revision c.Revision out of the watch's
// order, unless the Store has it or something newer already (outdated).
// The Store gets it as Direct, which does not move the point a restart
// resumes from; the watch then passes over the id's older entries until
// it reaches this one.
func (r *Replica) applyDirect(c registry.Change) error {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if r.outdated(c) {
		return nil
	}
	refused, err := r.cfg.Store.ApplyChanges([]registry.Change{{ID: c.ID, Value: c.Value, Revision: c.Revision, Direct: true}})
	if err != nil {
		return err
	}
	r.judge([]registry.Change{c}, refused)
	r.ahead[c.ID] = max(r.ahead[c.ID], c.Revision)
	return nil
}

// outdated reports whether the Store holds c's state or a newer one of
// its webhook: the watch passed c.Revision; another out-of-order apply
// (two Lookups racing, a write's own echo) brought the same or a later
// revision; or this instance is deleting the webhook, a deletion newer
// than any value read from the bucket before it (and one whose echo timed
// out is applied without a revision). r.applyMu is held.
func (r *Replica) outdated(c registry.Change) bool {
	if r.watched.Load() >= c.Revision {
		return true
	}
	if rev, ok := r.ahead[c.ID]; ok && rev >= c.Revision {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, deleting := r.deleting[c.ID]
	return deleting
}

// Delete records a deletion in the bucket and returns once this Store no
// longer has the webhook, like Put. Until the watch has passed the
// deletion, it ignores the webhook's older creation, so a lagging watch
// cannot bring it back.
func (r *Replica) Delete(ctx context.Context, id string) error {
	kv, err := r.bucket()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.WriteTimeout)
	defer cancel()
	r.mu.Lock()
	r.deleting[id] = struct{}{}
	r.mu.Unlock()
	if err := kv.Delete(ctx, id); err != nil {
		r.mu.Lock()
		delete(r.deleting, id)
		r.mu.Unlock()
		return fmt.Errorf("%w: %v", registry.ErrUnavailable, err)
	}
	if r.await(ctx, func() bool { _, ok := r.cfg.Store.Index().Get(id); return !ok }) {
		return nil
	}
	_, err = r.cfg.Store.ApplyChanges([]registry.Change{{ID: id}})
	return err
}

// await reports whether done became true, checked after every batch the
// watch applies, within echoWait (or until ctx ends).
func (r *Replica) await(ctx context.Context, done func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, echoWait)
	defer cancel()
	return r.waitApplied(ctx, done)
}

// waitApplied reports whether done became true, checked now and after
// every batch the watch applies, before ctx ends.
func (r *Replica) waitApplied(ctx context.Context, done func() bool) bool {
	for {
		r.mu.Lock()
		ch := r.applied
		r.mu.Unlock()
		if done() {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

func (r *Replica) notify() {
	r.mu.Lock()
	close(r.applied)
	r.applied = make(chan struct{})
	r.mu.Unlock()
}

// Lookup reads one webhook straight from the bucket and applies it, for a
// delivery job that reached this instance before the watch did. It reports
// false when the bucket does not have it (it was deleted, or never existed).
func (r *Replica) Lookup(ctx context.Context, id string) (*registry.Webhook, bool, error) {
	kv, err := r.bucket()
	if err != nil {
		return nil, false, err
	}
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", registry.ErrUnavailable, err)
	}
	if err := r.applyDirect(registry.Change{ID: id, Value: e.Value(), Revision: e.Revision()}); err != nil {
		return nil, false, err
	}
	w, ok := r.cfg.Store.Index().Get(id)
	return w, ok, nil
}

func (r *Replica) bucket() (jetstream.KeyValue, error) {
	kv := r.kv.Load()
	if kv == nil {
		return nil, fmt.Errorf("%w: not connected to the bucket yet", registry.ErrUnavailable)
	}
	return *kv, nil
}

// skip reports whether the watch should pass over c: the creation of a
// webhook this instance deleted and whose deletion the watch has not
// reached yet. It forgets the id once the deletion comes by.
func (r *Replica) skip(c registry.Change) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.deleting[c.ID]; !ok {
		return false
	}
	if c.Value == nil {
		delete(r.deleting, c.ID)
		return false
	}
	return true
}

// Run creates or updates the bucket (retrying while NATS is unreachable)
// and applies its changes to the Store until ctx ends.
func (r *Replica) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("replica: Run called twice")
	}
	for wait := 500 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		setupCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		kv, err := r.cfg.JetStream.CreateOrUpdateKeyValue(setupCtx, jetstream.KeyValueConfig{
			Bucket:      r.cfg.Bucket,
			Description: "webhookd subscriptions, shared by every instance",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    r.cfg.Replicas,
			MaxBytes:    r.cfg.MaxBytes,
		})
		if err == nil {
			// Only memory at the server's next start depends on it.
			if err := r.shrinkDedupeWindow(setupCtx); err != nil {
				r.log.Warn("could not shrink the shared registry's duplicate window", "bucket", r.cfg.Bucket, "err", err)
			}
		}
		cancel()
		if err == nil {
			r.kv.Store(&kv)
			break
		}
		r.log.Warn("opening the shared registry failed; retrying", "bucket", r.cfg.Bucket, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	// Re-sealing and compaction run beside the watch; Run returns only
	// after both have.
	var background sync.WaitGroup
	defer background.Wait()
	background.Go(func() { r.resealWhenSynced(ctx) })
	background.Go(func() { r.compactLoop(ctx) })
	for {
		err := r.follow(ctx, *r.kv.Load())
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errReconnected) {
			r.log.Info("reconnected to NATS; resuming the shared registry's watch")
			continue
		}
		r.log.Warn("following the shared registry stopped; resuming", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}
