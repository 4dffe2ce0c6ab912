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
// --api-keys, for workspace "default") authenticates only while no other
// key exists for its workspace: neither a shared key (ever created, from
// `webhookd keys create`) nor a configured one (--api-keys default:...,
// added at a later start). Once a shared key has been created it is
// refused for good — revoking or letting expire every shared key does not
// bring it back (a new shared key is the way back in); a configured key
// retires it for as long as it is configured. Configured keys are never
// affected, and the bootstrap key itself given in --api-keys is a
// configured key like any other.
type KeySet struct {
	// Static holds the configured keys (--api-keys); always honoured.
	Static KeyResolver
	// StaticWorkspaces are the workspaces Static holds a key for; the
	// bootstrap key is refused for each of them. Nil: none.
	StaticWorkspaces map[string]bool
	// Shared holds the run-time keys.
	Shared SharedKeys
	// Bootstrap holds the bootstrap key: honoured only while neither
	// StaticWorkspaces nor Shared has a key for the workspace it resolves
	// to (Shared nil, or it has never issued one).
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
		if ws, ok := k.Bootstrap.Resolve(key); ok && !k.BootstrapRetired(ws) {
			return ws, true
		}
	}
	return "", false
}

// BootstrapRetired reports whether a bootstrap key for workspace is refused
// because another key exists for it, configured or shared.
func (k KeySet) BootstrapRetired(workspace string) bool {
	return k.StaticWorkspaces[workspace] || (k.Shared != nil && k.Shared.Issued(workspace))
}
