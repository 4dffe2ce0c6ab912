// Package registry is webhookd's subscription registry: the Webhook model
// and its validation, the bbolt Store that persists it, the in-memory match
// index the dispatcher reads on every event, the records of deliveries that
// ran out of retries, and the hashed API keys.
//
// # bbolt layout (schema version 1)
//
//	meta/                      "schema" -> "1", "journal-revision" -> 8-byte big-endian revision
//	webhooks/<workspace>/      <webhook id> -> Webhook JSON
//	failures/<webhook id>/     <8-byte big-endian unix nanos><failure id> -> Failure JSON
//	apikeys/                   <sha256 of key> -> workspace (bootstrap keys only)
//
// Webhook ids are time-sortable, so key order in a workspace's bucket is
// creation order, which is what pagination walks. A store written by a newer
// schema is refused rather than misread.
//
// # Index
//
// The Index is rebuilt from bbolt at Open and updated by every write
// through the Store. Readers never lock: the index is split into
// copy-on-write shards behind atomic pointers, and a writer publishes a
// modified copy of the one shard it changes, so a lookup costs the same
// at a thousand subscriptions as at a million.
//
// Nothing in it is a pointer per subscription: each webhook is a packed
// record in an append-only byte arena (arena.go, record.go), and the
// shards are sorted arrays of (packed id, slot) and (match key hash,
// slot). The GC has next to nothing to mark, and a subscription costs
// about 130 bytes instead of about 470. The *Webhook that Get and Match
// return is built from the record when first asked for and held through
// a weak pointer, so it stays the same pointer while anyone holds it.
// Replaced and deleted records stay in the arena until they outnumber the
// live ones; then the next write compacts it (compact.go).
//
// # Sharing between instances
//
// With a Journal (UseJournal; registry/replica provides one on a JetStream
// key-value bucket), Create, Delete, Disable and Enable record the change
// in the journal, and every instance's Store applies the journal's changes
// in order (ApplyChanges), remembering the last revision applied so that a
// restart resumes from it. A journal value for a known id replaces that
// webhook everywhere; updates are compare-and-swap in the journal, so they
// neither undo each other nor revive a deleted webhook.
//
// # Disabled webhooks
//
// A disabled webhook (Disable, by the dispatcher; Enable undoes it) stays
// stored and in the Index's by-id map, but is left out of the match
// buckets, so fan-out makes no jobs for it while Get still tells the
// dispatcher why a pending job's webhook no longer takes deliveries.
package registry
