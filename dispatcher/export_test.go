package dispatcher

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/webhookd/webhookd/dispatcher/signature"
	"github.com/webhookd/webhookd/events"
)

// JobPayloadSizes returns, for an event of bodyLen bytes published as
// eventID on subject and delivered to webhookID, the payload size (headers
// and data, what max_payload limits) of its first delivery job and of the
// retry scheduled after a first attempt that failed with lastError. Tests
// use it to size events between the two.
func (d *Dispatcher) JobPayloadSizes(eventID, webhookID, workspace string, et events.Type, subject string, bodyLen int, lastError string) (first, retry int) {
	now := time.Now()
	j := job{
		DeliveryID: signature.DeliveryID(eventID, webhookID), WebhookID: webhookID, Workspace: workspace,
		EventID: eventID, EventType: et, Subject: subject, Published: now, Attempt: 1, Body: make([]byte, bodyLen),
	}
	first = payloadSize(&nats.Msg{Subject: d.jobSubject(webhookID), Header: j.header(j.DeliveryID), Data: j.Body})
	next := j
	next.Attempt, next.FirstAttempt, next.LastError, next.LastStatus = 2, now, lastError, 500
	h := next.header(j.DeliveryID + ".a2")
	h[hdrSchedule] = []string{"@at " + now.UTC().Format(time.RFC3339Nano)}
	h[hdrSchedTarget] = []string{d.trialSubject(webhookID)}
	retry = payloadSize(&nats.Msg{Subject: d.schedSubject(webhookID, j.DeliveryID), Header: h, Data: j.Body})
	return first, retry
}

// CachedTargets lists the webhook ids the target cache holds.
func (d *Dispatcher) CachedTargets() []string {
	var ids []string
	d.targets.Range(func(k, _ any) bool {
		ids = append(ids, k.(string))
		return true
	})
	return ids
}

// Target resolves (and caches) a webhook's target as a job would.
func (d *Dispatcher) Target(id string) bool {
	_, ok := d.target(id)
	return ok
}

// PruneTargets runs the prune Run runs every 30 s.
func (d *Dispatcher) PruneTargets() { d.pruneTargets() }

// Proven reports whether the lane of host (host:port) counts as proven,
// so tests can wait for a warm-up delivery to have made it so.
func (d *Dispatcher) Proven(host string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.lanes[host]
	return l != nil && l.proven.Load()
}
