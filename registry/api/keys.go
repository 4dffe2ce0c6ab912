package api

// KeyResolver maps a presented API key to the workspace it belongs to.
// It is called on every authenticated request, so it must be safe for
// concurrent use, answer from memory (no network round trip), hash the key
// before any lookup whose timing could depend on it, and never log it.
// registry.KeyRing (--api-keys, the bootstrap key) and
// registry/apikeys.Store (shared run-time keys) implement it.
type KeyResolver interface {
	Resolve(key string) (workspace string, ok bool)
}

// SharedKeys is a KeyResolver for keys managed at run time and shared by
// every instance (registry/apikeys.Store).
type SharedKeys interface {
	KeyResolver
	// Issued reports whether a key was ever created for workspace,
	// revoked and expired keys included. While the implementation does
	// not know yet (its first load has not completed) it must answer
	// true, so that a retired bootstrap key is not honoured meanwhile.
	Issued(workspace string) bool
}

// KeySet is the daemon's KeyResolver: the configured keys, the shared
// run-time keys and the bootstrap key, with the bootstrap key's retirement
// rule. Any nil member is skipped.
//
// The rule: the bootstrap key (created on a first start without
// --api-keys, for workspace "default") authenticates only until the first
// shared key is created for its workspace. From then on it is refused for
// good — revoking or letting expire every shared key does not bring it
// back (a new shared key, from `webhookd keys create`, is the way back in).
// Configured keys (--api-keys) are never affected.
type KeySet struct {
	// Static holds the configured keys (--api-keys); always honoured.
	Static KeyResolver
	// Shared holds the run-time keys.
	Shared SharedKeys
	// Bootstrap holds the bootstrap key: honoured only while Shared is
	// nil or has never issued a key for the workspace it resolves to.
	Bootstrap KeyResolver
}

// Resolve implements KeyResolver: Static, then Shared, then Bootstrap.
func (k KeySet) Resolve(key string) (string, bool) {
	if key == "" {
		return "", false
	}
	if k.Static != nil {
		if ws, ok := k.Static.Resolve(key); ok {
			return ws, true
		}
	}
	if k.Shared != nil {
		if ws, ok := k.Shared.Resolve(key); ok {
			return ws, true
		}
	}
	if k.Bootstrap != nil {
		if ws, ok := k.Bootstrap.Resolve(key); ok && (k.Shared == nil || !k.Shared.Issued(ws)) {
			return ws, true
		}
	}
	return "", false
}
