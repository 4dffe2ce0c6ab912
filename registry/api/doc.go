// Package api is webhookd's management HTTP API (DESIGN §4): registering,
// listing, reading, changing and deleting webhook subscriptions, publishing
// events, inspecting and manually retrying failed deliveries, plus the
// unauthenticated endpoints /healthz, /readyz, /metrics and /openapi.yaml.
// openapi.yaml (OpenAPI 3.1, embedded and served) describes every route;
// tests hold it to the routes registered, and the answers to it.
//
// # Routes
//
//	POST   /api/webhook                                       create (body {"url","eventType","workflowId"?,"description"?})
//	GET    /api/webhook?limit=&cursor=                        list the caller's workspace
//	GET    /api/webhook/{id}                                  read one (without its secret)
//	PATCH  /api/webhook/{id}                                  change url, eventType, workflowId, description, enabled
//	GET    /api/webhook/{id}/secret                           read its signing secret: {"secret":"whsec_..."} (+ previousSecret,
//	                                                          previousSecretExpiresAt during a rotation's grace period)
//	POST   /api/webhook/{id}/rotate-secret                    new secret (body {"grace":"24h"}? 0s..168h); the old one co-signs until then
//	POST   /api/webhook/{id}/test                             send a signed webhook.test event now; answer {delivered,status,durationMs,error,webhookId}
//	DELETE /api/webhook/{id}                                  delete one (and its recorded failures)
//	POST   /api/webhook/{id}/enable                           re-enable a disabled one (idempotent), reset its health
//	GET    /api/webhook/{id}/failures?limit=                  failed deliveries, newest first
//	POST   /api/webhook/{id}/failures/{failureId}/retry       redeliver one failure now
//	POST   /api/events                                        publish an event (202 once JetStream stored it)
//	GET    /healthz  /readyz  /metrics  /openapi.yaml         no auth
//
// Every /api route needs the header x-copy-ai-api-key; the key decides the
// workspace, and ids of other workspaces answer 404 exactly like unknown ids so
// that a caller cannot probe for them.
//
// # Envelope
//
// Success is {"status":"success","data":...}; the list adds a top-level
// "nextCursor" that is absent on the last page. Every error, whatever produced
// it (a handler, the router's 404/405, a recovered panic), is
// {"status":"error","errorCode":"<CODE>","details":{...}} with details optional.
//
// The webhook's signing secret ("whsec_...") is returned on create, by
// rotate-secret and by the explicit read GET /api/webhook/{id}/secret (as
// Svix does), never by
// list, get or enable (DESIGN §6): lists end up in logs, dashboards and
// support tickets, and a secret should leave the server only when a caller
// asks for that one secret. Each secret read is logged (workspace and
// webhook id, never the secret). Responses carry Cache-Control: no-store.
//
// # Secret rotation
//
// POST …/rotate-secret replaces the secret; for the grace period (default
// 24h, 0s to 168h; a Go duration string) the replaced secret keeps
// signing, so each delivery's webhook-signature is "v1,<new> v1,<old>"
// (the Standard Webhooks form for several signatures) and receivers
// verifying with either secret accept it. A second rotation drops the
// oldest secret. The answer is {"secret", "previousSecretExpiresAt"}; the
// rotation is logged without either secret.
//
// # Test events
//
// POST …/test sends {"type":"webhook.test","webhookId","timestamp"} to the
// webhook now, through Config.Tester (the dispatcher: its client, SSRF
// guard and signing), and answers 200 with the outcome whether or not the
// endpoint accepted it. Nothing is recorded and health and circuit are
// untouched, so disabled webhooks and open circuits can be tested. Per
// webhook: 5 in a row, then 1 a second (429 RATE_LIMITED, Retry-After).
//
// # Webhook view
//
// A webhook on the wire is {id, url, eventType, workflowId, createdAt,
// enabled, disabledReason?, disabledAt?, description?, health}; the create
// answer adds secret. description appears only when set. disabledReason
// ("failing", "gone", "manual") and disabledAt appear only while enabled is
// false. health is {"state":"healthy"|"failing"|"circuit_open",
// "consecutiveFailures", "lastSuccessAt", "lastFailureAt",
// "lastErrorClass", "lastStatus", "circuitOpenUntil"}, each field but
// state omitted while zero (circuitOpenUntil also unless the circuit is
// open); times are RFC 3339 UTC with milliseconds. The create response
// always shows a healthy webhook.
//
// # Error codes
//
// These codes are stable; clients may switch on them.
//
//	INVALID_JSON            400  body is not one JSON object (details.reason)
//	UNSUPPORTED_MEDIA_TYPE  400  POST body without Content-Type application/json (DESIGN fixes 400, not 415)
//	UNKNOWN_FIELD           400  PATCH or simple-form publish member that is not one (details names each)
//	INVALID_IDEMPOTENCY_KEY 400  Idempotency-Key not 1-256 printable ASCII, or given twice
//	INVALID_CURSOR          400  ?cursor= was not produced by this server
//	INVALID_LIMIT           400  ?limit= is not an integer in 1..1000
//	UNAUTHORIZED            401  x-copy-ai-api-key missing or unknown
//	NOT_FOUND               404  unknown route, or unknown / other workspace's id
//	METHOD_NOT_ALLOWED      405  known route, wrong method (Allow header set)
//	BODY_TOO_LARGE          413  body over Config.MaxBodyBytes, or an event over the decoder's MaxBytes (details.limitBytes)
//	VALIDATION_FAILED       400  a bad ?status=, ?since= or ?limit= of the deliveries list (details per field)
//	                        422  details maps each bad field (url, eventType, workflowId, description, enabled,
//	                             type, payload, grace; "body" for a PATCH setting nothing) to a message
//	RATE_LIMITED            429  too many failed authentications from this client with this key, or with any key,
//	                             or too many test events for this webhook (Retry-After set)
//	INTERNAL                500  anything unexpected; logged with the request id, never described
//	REDELIVERY_UNAVAILABLE  501  manual retry requested but this server has no Redeliverer
//	                        409  ... or the failure's event body was not kept
//	TEST_UNAVAILABLE        501  test event requested but this server has no Tester
//	DELIVERIES_UNAVAILABLE  501  delivery log route but this server keeps no delivery log
//	REPLAY_UNAVAILABLE      501  replay route but this server runs no replays
//	STORE_FULL              503  a manual retry while the deliveries stream is nearly full and fan-out is
//	                             paused (Retry-After set); nothing was queued
//	EVENT_EXPIRED           409  delivery retry of an event no longer in the events stream, with no failure record
//	NOT_READY               503  /readyz while not ready (details.reason)
//	REGISTRY_UNAVAILABLE    503  a write while the shared registry (NATS) is unreachable; nothing changed
//	EVENTS_UNAVAILABLE      503  JetStream did not acknowledge a published event (details.reason says
//	                             whether it refused it or it may be stored: retry with the same key)
//
// # Request bodies
//
// Create ignores unknown JSON fields (copy.ai clients send extras); PATCH
// and the simple publish form refuse them (400 UNKNOWN_FIELD), since a
// misspelt member of a change would otherwise silently change nothing.
// Field names match exactly (no case folding), trailing data after the
// object is rejected, and in create a JSON null counts as an absent field
// (in PATCH it clears workflowId or description). A known field of the
// wrong JSON type is a 422 naming that field, reported together with any
// other invalid field. PATCH also takes application/merge-patch+json.
//
// # Publishing
//
// POST /api/events takes the event object exactly as on NATS, or the simple
// form {"eventType","workflowId"?,"payload"?} (stored as {"type",
// "workflowId", payload's members}); it accepts only what the fan-out's
// events.Decoder accepts. The Idempotency-Key header, scoped to the
// workspace, becomes Nats-Msg-Id and the event id ("<workspace>:<key>"):
// a repeat within the events stream's Duplicates window (2 minutes) stores
// nothing and answers duplicate true with the first sequence.
//
// # API keys
//
// Config.Keys resolves keys to workspaces; the daemon passes a KeySet:
// configured keys (--api-keys), shared run-time keys (registry/apikeys,
// managed with `webhookd keys`) and the bootstrap key, which stops
// authenticating for good once a shared key has been created for its
// workspace ("default").
//
// # Brute-force protection
//
// The key is checked first: a valid key is always served, whatever others
// have failed. Only failed attempts are charged and limited, in two
// budgets: per (client address, presented key) — the key identified by the
// first 8 bytes of its SHA-256, in memory only — 10 failures then one per
// second, so that one client looping on a stale key behind a load balancer
// spends only its own budget; and per client address for all keys, 100 then
// 20 per second, so that a scanner presenting a new key each time is
// limited too. A spent budget turns the 401 into a 429 with Retry-After.
//
// The client address is the TCP peer (IPv6 grouped by /64). Forwarding
// headers are ignored unless Config.TrustedProxies is set, and then only the
// one named by Config.ForwardedHeader (X-Forwarded-For or Forwarded), only
// from a peer inside TrustedProxies, and read right to left: the client is
// the nearest hop that is not itself a trusted proxy. Both tables are
// bounded (10,000 entries each), so an attacker cannot grow memory by
// rotating addresses or keys.
package api
