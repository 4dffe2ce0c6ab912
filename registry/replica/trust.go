package replica

import (
	"fmt"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/webhookd/webhookd/registry"
)

// metrics are the replica's Prometheus series.
type metrics struct {
	refused   *prometheus.CounterVec
	compacted prometheus.Counter
}

func (m *metrics) register(reg prometheus.Registerer, blocked func() int) error {
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "webhookd", Name: "registry_entries_refused_total",
		Help: "Shared-registry entries not applied as written, by reason (invalid: fails the API's rules, applied as a deletion; plaintext_secret: unsealed while sealing is required; sealed: no key given opens it)."},
		[]string{"reason"})
	m.compacted = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "webhookd", Name: "registry_tombstones_compacted_total",
		Help: "Deletion markers removed from the shared registry after the tombstone grace period."})
	for _, reason := range registry.RefusalReasons {
		m.refused.WithLabelValues(reason)
	}
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{m.refused, m.compacted,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "webhookd", Name: "registry_entries_blocked",
			Help: "Shared-registry entries this instance cannot open (sealed with a key it was not given); above 0 the instance is not ready."},
			func() float64 { return float64(blocked()) })} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("replica: register metrics: %w", err)
		}
	}
	return nil
}

// judge records what the Store refused of an applied run: every refusal
// is counted and logged (with the id, never the URL: it may hold a
// credential), an entry sealed beyond reach blocks the instance, and any
// later entry of a blocked id that did apply unblocks it.
func (r *Replica) judge(run []registry.Change, refused []registry.Refusal) {
	sealed := make(map[uint64]registry.Refusal)
	for _, rf := range refused {
		r.m.refused.WithLabelValues(rf.Reason).Inc()
		if rf.Reason == registry.RefusedSealed {
			sealed[rf.Revision] = rf
			continue
		}
		r.log.Error("refusing a shared-registry entry; it is treated as deleted", "webhook_id", rf.ID,
			"revision", rf.Revision, "reason", rf.Reason, "err", rf.Err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.blocked) == 0 && len(sealed) == 0 {
		return
	}
	for _, c := range run {
		if c.ID == "" {
			continue
		}
		if rf, ok := sealed[c.Revision]; ok && rf.ID == c.ID {
			if _, known := r.blocked[c.ID]; !known {
				r.log.Error("a shared-registry entry is sealed with an encryption key this instance was not given; not ready until it can be applied",
					"webhook_id", c.ID, "revision", c.Revision, "err", rf.Err)
			}
			r.blocked[c.ID] = rf
			continue
		}
		delete(r.blocked, c.ID)
	}
}

// hold is the oldest revision of the blocked entries batch has no newer
// entry of: the resume point the Store records must stay below it
// (ApplyChangesHolding). Were it recorded past, a restart would resume
// after the entry, with an empty blocked set, and report ready without
// it. A blocked id the batch touches again is settled by that entry: the
// Store holds the point back itself if it is refused too.
func (r *Replica) hold(batch []registry.Change) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.blocked) == 0 {
		return 0
	}
	touched := make(map[string]struct{}, len(batch))
	for _, c := range batch {
		if c.ID != "" {
			touched[c.ID] = struct{}{}
		}
	}
	var hold uint64
	for id, rf := range r.blocked {
		if _, ok := touched[id]; !ok && (hold == 0 || rf.Revision < hold) {
			hold = rf.Revision
		}
	}
	return hold
}

func (r *Replica) blockedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.blocked)
}

// stuck reports the entries that keep this instance's copy incomplete.
func (r *Replica) stuck() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.blocked) == 0 {
		return nil
	}
	ids := make([]string, 0, len(r.blocked))
	for id := range r.blocked {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	first := r.blocked[ids[0]]
	return fmt.Errorf("%d shared-registry entries are encrypted with a key this instance was not given (first: %s: %v); start it with --encryption-key including that key",
		len(ids), first.ID, first.Err)
}
