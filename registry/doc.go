// Package registry is webhookd's subscription registry: the Webhook model
// and its validation, the bbolt Store that persists it, the in-memory match
// index the dispatcher reads on every event, the records of deliveries that
// ran out of retries, and the hashed API keys.
//
// # bbolt layout (schema version 1)
//
//	meta/                      "schema" -> "1"
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
// through the Store. Readers never lock: each (workspace, event type,
// workflowId) key holds an immutable slice behind an atomic pointer that
// writers replace (copy-on-write of that key's slice only), so a lookup
// costs the same at a thousand subscriptions as at a million.
package registry
