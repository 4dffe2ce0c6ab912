// Package dispatcher turns stored workflow events into signed HTTP
// deliveries, at least once.
//
// The pipeline has two durable JetStream stages, so that no step depends on
// memory surviving a crash:
//
//  1. Fan-out. A durable consumer on the events stream decodes each event,
//     looks its subscriptions up in the registry's match index and publishes
//     one delivery job per (event, subscription) to the deliveries stream,
//     with Nats-Msg-Id "<deliveryId>" so a replayed fan-out is deduplicated
//     by the server. Only when every job publish is acknowledged is the
//     event acked; a healthy webhook's first attempt may instead be made
//     straight from the event (direct.go), which then stays unacked until
//     that attempt succeeded or the delivery's next state is stored. A
//     malformed event is terminated, counted and logged once.
//
//  2. Delivery. Durable consumers on the deliveries stream hand each job
//     to a per-destination-host lane (bounded concurrency and queue), which
//     POSTs the event bytes with Standard Webhooks headers. A 2xx acks the
//     job. Any other outcome asks the retry policy for the next delay and
//     publishes the job again as a JetStream scheduled message ("Nats-Schedule:
//     @at <time>") before acking the current copy: the wait is held by the
//     server, not by a sleeping goroutine and not by the consumer's ack-pending
//     window, so a dead receiver's retries cannot stall anyone else, and a
//     restarted or different instance picks them up. When the policy gives up
//     (attempts, age, or 410 Gone) the delivery is recorded as failed in the
//     registry and counted.
//
// Failing destinations are kept apart (see Config's isolation fields and
// README "Failing endpoints"): each webhook has a circuit breaker
// (dispatcher/breaker) whose state every instance shares through a health
// bucket (registry/health); jobs of webhooks that are not known healthy
// travel on probation subjects with their own consumer and ack window, as
// one bundle per event when there are several; an open circuit's jobs are
// parked as scheduled messages until it half-opens; attempts draw on three
// worker pools (healthy, fresh hosts, probation), and a host that stops
// answering loses its place in the healthy one within ProvenLatency
// (stall.go); and a webhook failing for
// DisableAfter, or answering 410, is disabled with an operational event.
//
// Several webhookd processes may run against one NATS cluster: they share the
// durable consumers and so share the work.
package dispatcher
