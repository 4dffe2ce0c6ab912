package replay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/events"
)

// record is a job as stored: the Job plus what only the runner needs.
// Job.Cursor is hidden from API JSON, so it is stored as "cursor" here.
type record struct {
	Job
	Seq uint64 `json:"cursor"`
	// EventType is the webhook's at Start: the subject the job reads. A
	// webhook patched to another type ends the job, which would otherwise
	// read the wrong events.
	EventType events.Type `json:"eventType"`
}

func (r record) job() Job { return r.Job }

func encode(r record) []byte {
	r.Seq = r.Cursor
	b, err := json.Marshal(r)
	if err != nil {
		panic("replay: encode record: " + err.Error()) // plain data: cannot fail
	}
	return b
}

func decode(b []byte) (record, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return record{}, err
	}
	r.Cursor = r.Seq
	return r, nil
}

func jobKey(ws, id string) string { return "job." + ws + "." + id }
func activeKey(ws string) string  { return "active." + ws }

// casAttempts bounds compare-and-set retries; conflicts need another
// writer of the same key in the same few milliseconds, so a handful is
// plenty.
const casAttempts = 10

// orphanGrace is how long an active entry whose job record is missing is
// kept: Start reserves the entry before it writes the record, so a fresh
// entry without one is a Start in progress, an old one a Start that died.
const orphanGrace = time.Minute

func conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// wrap marks a bucket error as ErrUnavailable: every KV failure at this
// point is NATS being unreachable or slow, so the API answers 503.
func wrap(err error, what string) error {
	return fmt.Errorf("replay: %s: %w: %w", what, ErrUnavailable, err)
}

// load reads one job of workspace ws. Ids that could not have been issued
// are ErrNotFound before they reach the bucket (and a key filter).
func (m *Manager) load(ctx context.Context, kv jetstream.KeyValue, ws, id string) (record, uint64, error) {
	if !validID(id) || events.ValidateWorkspace(ws) != nil {
		return record{}, 0, ErrNotFound
	}
	e, err := kv.Get(ctx, jobKey(ws, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return record{}, 0, ErrNotFound
	}
	if err != nil {
		return record{}, 0, wrap(err, "read job "+id)
	}
	rec, err := decode(e.Value())
	if err != nil || rec.ID != id || rec.Workspace != ws {
		return record{}, 0, fmt.Errorf("replay: job %s: unreadable record: %v", id, err)
	}
	return rec, e.Revision(), nil
}

// activeEntry is one unfinished job in a workspace's active list.
type activeEntry struct {
	ID string    `json:"id"`
	At time.Time `json:"at"` // when Start reserved it
}

type activeList struct {
	Jobs []activeEntry `json:"jobs"`
}

func readActive(ctx context.Context, kv jetstream.KeyValue, ws string) ([]activeEntry, uint64, error) {
	e, err := kv.Get(ctx, activeKey(ws))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, wrap(err, "read active jobs")
	}
	var l activeList
	if err := json.Unmarshal(e.Value(), &l); err != nil {
		return nil, e.Revision(), nil // unreadable: rewritten from scratch
	}
	return l.Jobs, e.Revision(), nil
}

// writeActive replaces the list written at rev (0: absent). An empty list
// is deleted so that schedulers list only workspaces with work.
func writeActive(ctx context.Context, kv jetstream.KeyValue, ws string, l []activeEntry, rev uint64) error {
	var err error
	switch {
	case len(l) == 0 && rev == 0:
		return nil
	case len(l) == 0:
		err = kv.Delete(ctx, activeKey(ws), jetstream.LastRevision(rev))
	case rev == 0:
		b, _ := json.Marshal(activeList{Jobs: l})
		_, err = kv.Create(ctx, activeKey(ws), b)
	default:
		b, _ := json.Marshal(activeList{Jobs: l})
		_, err = kv.Update(ctx, activeKey(ws), b, rev)
	}
	return err
}

// live keeps the entries whose job is unfinished; changed reports a drop.
// A job that cannot be read now is kept: better to count it once too
// often than to let a workspace exceed its bound.
func (m *Manager) live(ctx context.Context, kv jetstream.KeyValue, ws string, l []activeEntry, now time.Time) (kept []activeEntry, recs []record, revs []uint64, changed bool) {
	for _, e := range l {
		rec, rev, err := m.load(ctx, kv, ws, e.ID)
		switch {
		case errors.Is(err, ErrNotFound) && now.Sub(e.At) >= orphanGrace:
			changed = true
			continue
		case err == nil && rec.Finished():
			changed = true
			continue
		}
		kept = append(kept, e)
		if err == nil {
			recs, revs = append(recs, rec), append(revs, rev)
		}
	}
	return kept, recs, revs, changed
}

// reserve adds id to the workspace's active list unless it already holds
// MaxPerWorkspace unfinished jobs.
func (m *Manager) reserve(ctx context.Context, kv jetstream.KeyValue, ws, id string, now time.Time) error {
	for range casAttempts {
		l, rev, err := readActive(ctx, kv, ws)
		if err != nil {
			return err
		}
		kept, _, _, _ := m.live(ctx, kv, ws, l, now)
		if len(kept) >= m.cfg.MaxPerWorkspace {
			return fmt.Errorf("%w (%d)", ErrTooMany, m.cfg.MaxPerWorkspace)
		}
		err = writeActive(ctx, kv, ws, append(kept, activeEntry{ID: id, At: now}), rev)
		if err == nil {
			return nil
		}
		if !conflict(err) {
			return wrap(err, "reserve job")
		}
	}
	return fmt.Errorf("replay: reserve job: the active list kept changing: %w", ErrUnavailable)
}

// release drops id (and any finished job) from the workspace's active
// list. It is best effort: a leftover entry is pruned by the next Start
// or scan, as its job is finished.
func (m *Manager) release(ctx context.Context, kv jetstream.KeyValue, ws, id string) {
	for range casAttempts {
		l, rev, err := readActive(ctx, kv, ws)
		if err != nil {
			m.log.Warn("could not release a replay slot; it is pruned later", "job", id, "err", err)
			return
		}
		kept, _, _, _ := m.live(ctx, kv, ws, l, m.now())
		kept = removeID(kept, id)
		if len(kept) == len(l) {
			return
		}
		if err := writeActive(ctx, kv, ws, kept, rev); err == nil || !conflict(err) {
			return
		}
	}
}

func removeID(l []activeEntry, id string) []activeEntry {
	out := l[:0]
	for _, e := range l {
		if e.ID != id {
			out = append(out, e)
		}
	}
	return out
}

// candidate is a job this instance may claim, with the revision read.
type candidate struct {
	rec record
	rev uint64
}

// candidates scans the active lists for claimable jobs: queued ones, and
// running ones whose owner stopped writing progress StaleAfter ago.
// Oldest first, so a backlog drains in order.
func (m *Manager) candidates(ctx context.Context, kv jetstream.KeyValue) ([]candidate, error) {
	keys, err := kv.ListKeysFiltered(ctx, activeKey("*"))
	if err != nil {
		return nil, err
	}
	var names []string
	for k := range keys.Keys() {
		names = append(names, k)
	}
	now := m.now()
	var out []candidate
	for _, k := range names {
		ws := strings.TrimPrefix(k, "active.")
		l, rev, err := readActive(ctx, kv, ws)
		if err != nil {
			return out, err
		}
		kept, recs, revs, changed := m.live(ctx, kv, ws, l, now)
		if changed {
			_ = writeActive(ctx, kv, ws, kept, rev) // a conflict: the next scan prunes
		}
		for i, rec := range recs {
			if rec.State == StateQueued || rec.State == StateRunning && now.Sub(rec.UpdatedAt) > m.cfg.StaleAfter {
				out = append(out, candidate{rec, revs[i]})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rec.CreatedAt.Before(out[j].rec.CreatedAt) })
	return out, nil
}

// newID is "rp_" + 12 hex digits of the millisecond time + 16 random hex
// digits: unique, sortable by creation, and one literal KV key token.
func newID(now time.Time) string {
	return "rp_" + fmt.Sprintf("%012x", uint64(now.UnixMilli())&(1<<48-1)) + randHex(8)
}

func validID(id string) bool {
	rest, ok := strings.CutPrefix(id, "rp_")
	if !ok || len(rest) != 28 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil && strings.ToLower(rest) == rest
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

type metrics struct {
	replays    *prometheus.CounterVec
	deliveries prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "webhookd", Name: "replays_total",
			Help: "Replay jobs ended, by outcome (succeeded, failed, canceled)."}, []string{"outcome"}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "webhookd", Name: "replay_deliveries_total",
			Help: "Deliveries re-enqueued by replay jobs (a job resumed after a takeover may repeat a few)."}),
	}
	for _, o := range []string{StateSucceeded, StateFailed, StateCanceled} {
		m.replays.WithLabelValues(o)
	}
	if reg == nil {
		return m, nil
	}
	// A second Manager in one process (tests) shares the first's metrics.
	if err := reg.Register(m.replays); err != nil {
		var are prometheus.AlreadyRegisteredError
		c, ok := (*prometheus.CounterVec)(nil), false
		if errors.As(err, &are) {
			c, ok = are.ExistingCollector.(*prometheus.CounterVec)
		}
		if !ok {
			return m, fmt.Errorf("replay: register metrics: %w", err)
		}
		m.replays = c
	}
	if err := reg.Register(m.deliveries); err != nil {
		var are prometheus.AlreadyRegisteredError
		c, ok := prometheus.Counter(nil), false
		if errors.As(err, &are) {
			c, ok = are.ExistingCollector.(prometheus.Counter)
		}
		if !ok {
			return m, fmt.Errorf("replay: register metrics: %w", err)
		}
		m.deliveries = c
	}
	return m, nil
}

func (m metrics) outcome(state string) { m.replays.WithLabelValues(state).Inc() }
