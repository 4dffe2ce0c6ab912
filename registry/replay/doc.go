// Package replay runs background replay jobs: re-delivering, to one
// webhook, the events still in the events stream within a time window
// [Since, Until), either all of those that match the webhook or only those
// whose delivery to it is currently failed. It serves
// POST /api/webhook/{id}/replay and GET /api/replays/{id}.
//
// # Shared state
//
// Every job is a JSON record in one JetStream key-value bucket
// (WEBHOOKD_REPLAYS by default) that every instance reads and writes, so
// a job's progress reads the same through any instance, and a job
// outlives the instance that started it. Keys:
//
//	job.<workspace>.<jobID>   the Job, plus its resume cursor
//	active.<workspace>        the ids of the workspace's unfinished jobs
//
// Putting the workspace in the key makes another workspace's job id
// simply absent (ErrNotFound) and lets the active list bound the
// unfinished jobs per workspace exactly, across instances: Start reserves
// a place in it with a compare-and-set on the key's revision before it
// writes the job. The active lists are also what schedulers scan, so a
// scan costs the unfinished jobs, never the finished ones kept for
// Retention.
//
// # Scheduling and takeover
//
// A queued job has no owner; any instance with a free slot (Concurrency)
// claims it by a compare-and-set that makes it running and names the
// instance as Owner. The owner writes progress (Cursor: the last events
// stream sequence done, and the counters) every Heartbeat, again by
// compare-and-set, so a write that fails on the revision means the job
// was taken over or canceled and the owner stops at once. A running job
// whose record is older than StaleAfter belongs to an instance that died;
// another instance claims it the same way and resumes after Cursor. An
// instance that stops cleanly hands its jobs back as queued, so another
// claims them at its next scan rather than after StaleAfter.
//
// Between two progress writes the owner may have re-delivered a few
// events that a successor re-delivers again: replay is at-least-once,
// like every delivery, and Enqueuer receives the ReplayID so the
// dispatcher can deduplicate on <replayID>.<deliveryID>.
//
// # Reading the stream
//
// A job reads the events stream through an ordered consumer (no durable
// state on the server, no acks) filtered on the one subject its webhook
// can match, <prefix>.<workspace>.<eventType>, starting at Since (or
// after Cursor). It ends at the first event stored at or after Until, at
// the subject's last event as of the job's start, or once the consumer
// has nothing pending. Re-deliveries go through Enqueuer at Rate per job,
// so a replay only ever reads the stream and adds fresh delivery jobs at
// a bounded pace: it never holds up live fan-out or deliveries.
package replay
