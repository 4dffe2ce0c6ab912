package dispatcher

import (
	"context"
	"time"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/deliverylog"
	"github.com/webhookd/webhookd/registry/health"
)

// Subscriptions finds webhooks. registry.Index satisfies it; reads must be
// safe from many goroutines and must not scan all subscriptions.
type Subscriptions interface {
	// Match appends to dst the webhooks an event of this workspace, type and
	// workflow goes to.
	Match(workspace string, t events.Type, workflowID string, dst []*registry.Webhook) []*registry.Webhook
	// Get returns the live webhook with this id, or false once it is deleted.
	Get(id string) (*registry.Webhook, bool)
}

// FailureRecorder keeps deliveries that ran out of retries for inspection and
// manual retry. registry.Store satisfies it.
type FailureRecorder interface {
	RecordFailure(ctx context.Context, f registry.Failure) error
}

// Lookup reaches past the local index to the shared registry, for a job
// whose webhook this instance has not heard of yet. replica.Replica
// satisfies it. It reports false when the webhook does not exist (it was
// deleted), and an error when it cannot tell.
type Lookup interface {
	Lookup(ctx context.Context, id string) (*registry.Webhook, bool, error)
}

// RegistrySync tells fan-out when the local copy of a shared registry is
// current. replica.Replica satisfies it.
type RegistrySync interface {
	// Sync returns nil once the local registry has applied every change the
	// shared registry had stored when Sync was called, and an error when
	// that cannot be confirmed before ctx ends (or the registry is stuck on
	// an entry it cannot apply).
	Sync(ctx context.Context) error
}

// HealthStore shares webhook health between instances. health.Store
// satisfies it; Health is a local read, Put and Reset network writes.
type HealthStore interface {
	Health(id string) health.Record
	Put(ctx context.Context, r health.Record) error
	Reset(ctx context.Context, id string) error
}

// AttemptLog records delivery attempts. deliverylog.Log satisfies it.
// Record is called on the delivery path and must not block.
type AttemptLog interface {
	Record(a deliverylog.Attempt)
}

// Disabler turns a webhook off. registry.Store satisfies it. The bool
// reports whether this call changed anything (false: already disabled).
type Disabler interface {
	Disable(ctx context.Context, id, reason string, at time.Time) (registry.Webhook, bool, error)
}
