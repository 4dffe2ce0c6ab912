package api

import (
	"net/http"
	"testing"

	"github.com/webhookd/webhookd/registry"
)

// sharedBook is an in-memory SharedKeys: a map of keys and the set of
// workspaces that have been issued one. (registry/apikeys has the real
// store; its tests run this same rule against it over NATS.)
type sharedBook struct {
	keys   map[string]string // key -> workspace, active keys only
	issued map[string]bool
}

func (b sharedBook) Resolve(key string) (string, bool) { ws, ok := b.keys[key]; return ws, ok }
func (b sharedBook) Issued(ws string) bool             { return b.issued[ws] }

func TestKeySetResolve(t *testing.T) {
	const (
		static    = "static-acme-key-0123456789"
		boot      = "wk_bootstrap-key-0123456789"
		sharedKey = "whk_shared-default-0123456789"
	)
	staticRing := registry.NewKeyRing([]registry.APIKey{{Workspace: "acme", Key: static}}, nil)
	bootRing := registry.NewKeyRing([]registry.APIKey{{Workspace: registry.BootstrapWorkspace, Key: boot}}, nil)
	defaultRing := registry.NewKeyRing([]registry.APIKey{{Workspace: registry.BootstrapWorkspace, Key: static}}, nil)
	bootAsStatic := registry.NewKeyRing([]registry.APIKey{{Workspace: registry.BootstrapWorkspace, Key: boot}}, nil)
	onlyDefault := map[string]bool{registry.BootstrapWorkspace: true}
	none := sharedBook{}
	issuedDefault := sharedBook{keys: map[string]string{sharedKey: "default"}, issued: map[string]bool{"default": true}}
	allRevoked := sharedBook{issued: map[string]bool{"default": true}} // issued once, none active now
	otherWorkspace := sharedBook{keys: map[string]string{sharedKey: "acme"}, issued: map[string]bool{"acme": true}}
	notLoaded := sharedBook{issued: map[string]bool{"default": true}} // what apikeys.Store answers before its first load

	tests := []struct {
		name   string
		set    KeySet
		key    string
		wantWS string // "" = refused
	}{
		{"static key", KeySet{Static: staticRing, Shared: issuedDefault, Bootstrap: bootRing}, static, "acme"},
		{"shared key", KeySet{Static: staticRing, Shared: issuedDefault, Bootstrap: bootRing}, sharedKey, "default"},
		{"bootstrap without a shared store", KeySet{Static: staticRing, Bootstrap: bootRing}, boot, "default"},
		{"bootstrap before any shared key", KeySet{Static: staticRing, Shared: none, Bootstrap: bootRing}, boot, "default"},
		{"bootstrap while shared keys exist only for other workspaces", KeySet{Shared: otherWorkspace, Bootstrap: bootRing}, boot, "default"},
		{"bootstrap retired by a shared key for default", KeySet{Static: staticRing, Shared: issuedDefault, Bootstrap: bootRing}, boot, ""},
		{"bootstrap stays retired once every shared key is revoked", KeySet{Shared: allRevoked, Bootstrap: bootRing}, boot, ""},
		{"bootstrap refused while the shared store has not loaded", KeySet{Shared: notLoaded, Bootstrap: bootRing}, boot, ""},
		{"bootstrap retired by a configured key for default, with no shared store", KeySet{Static: defaultRing, StaticWorkspaces: onlyDefault, Bootstrap: bootRing}, boot, ""},
		{"bootstrap retired by a configured key for default, before any shared key", KeySet{Static: defaultRing, StaticWorkspaces: onlyDefault, Shared: none, Bootstrap: bootRing}, boot, ""},
		{"the configured key for default works", KeySet{Static: defaultRing, StaticWorkspaces: onlyDefault, Shared: none, Bootstrap: bootRing}, static, "default"},
		{"a configured key for another workspace does not retire it", KeySet{Static: staticRing, StaticWorkspaces: map[string]bool{"acme": true}, Bootstrap: bootRing}, boot, "default"},
		{"the bootstrap key configured in --api-keys is a configured key", KeySet{Static: bootAsStatic, StaticWorkspaces: onlyDefault, Bootstrap: bootRing}, boot, "default"},
		{"static key unaffected by the retirement", KeySet{Static: staticRing, Shared: allRevoked, Bootstrap: bootRing}, static, "acme"},
		{"unknown key", KeySet{Static: staticRing, Shared: issuedDefault, Bootstrap: bootRing}, "nope-0123456789abcdef", ""},
		{"empty key", KeySet{Static: staticRing, Shared: issuedDefault, Bootstrap: bootRing}, "", ""},
		{"empty set", KeySet{}, static, ""},
		{"nil rings", KeySet{Static: (*registry.KeyRing)(nil), Bootstrap: (*registry.KeyRing)(nil)}, static, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws, ok := tc.set.Resolve(tc.key)
			if ok != (tc.wantWS != "") || ws != tc.wantWS {
				t.Fatalf("Resolve = %q %v, want %q", ws, ok, tc.wantWS)
			}
		})
	}
}

// TestKeySetThroughTheAPI: the server authenticates through a KeySet, and
// a retired bootstrap key gets 401 like any unknown key.
func TestKeySetThroughTheAPI(t *testing.T) {
	const boot = "wk_bootstrap-key-0123456789"
	book := sharedBook{keys: map[string]string{}, issued: map[string]bool{}}
	e := newTestEnv(t, func(c *Config) {
		c.Keys = KeySet{
			Static:    registry.NewKeyRing([]registry.APIKey{{Workspace: wsAcme, Key: keyAcme}}, nil),
			Shared:    book,
			Bootstrap: registry.NewKeyRing([]registry.APIKey{{Workspace: registry.BootstrapWorkspace, Key: boot}}, nil),
		}
	})
	if r := e.do("GET", "/api/webhook", boot, "", nil); r.status != http.StatusOK {
		t.Fatalf("bootstrap key before any shared key: %d %s", r.status, r.raw)
	}
	book.keys["whk_new-default-key-0123456789"] = registry.BootstrapWorkspace
	book.issued[registry.BootstrapWorkspace] = true
	wantError(t, e.do("GET", "/api/webhook", boot, "", nil), http.StatusUnauthorized, codeUnauthorized)
	if r := e.do("GET", "/api/webhook", "whk_new-default-key-0123456789", "", nil); r.status != http.StatusOK {
		t.Fatalf("shared key: %d %s", r.status, r.raw)
	}
	if r := e.do("GET", "/api/webhook", keyAcme, "", nil); r.status != http.StatusOK {
		t.Fatalf("static key: %d %s", r.status, r.raw)
	}
}
