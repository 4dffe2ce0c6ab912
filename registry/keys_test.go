package registry

import (
	"strings"
	"testing"

	"github.com/webhookd/webhookd/events"
)

func TestKeyRingResolve(t *testing.T) {
	const acme, other = "acme-key-0123456789", "other-key-0123456789"
	ring := NewKeyRing([]APIKey{{Workspace: "acme", Key: acme}, {Workspace: "other", Key: other}}, nil)
	boot := NewKeyRing(nil, []StoredKey{{Workspace: BootstrapWorkspace, Hash: hashOf("wk_boot-0123456789")}})
	var none *KeyRing
	tests := []struct {
		name   string
		ring   *KeyRing
		key    string
		wantWS string
	}{
		{"configured key", ring, acme, "acme"},
		{"second key", ring, other, "other"},
		{"one character off", ring, acme[:len(acme)-1] + "X", ""},
		{"prefix only", ring, acme[:8], ""},
		{"empty key", ring, "", ""},
		{"stored (bootstrap) key", boot, "wk_boot-0123456789", BootstrapWorkspace},
		{"configured key in the bootstrap ring", boot, acme, ""},
		{"nil ring", none, acme, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws, ok := tc.ring.Resolve(tc.key)
			if ok != (tc.wantWS != "") || ws != tc.wantWS {
				t.Fatalf("Resolve = %q %v, want %q", ws, ok, tc.wantWS)
			}
			if lws, lok := tc.ring.Lookup(tc.key); lws != ws || lok != ok {
				t.Fatal("Resolve and Lookup disagree")
			}
		})
	}
	if ring.Len() != 2 || boot.Len() != 1 || none.Len() != 0 {
		t.Fatalf("Len = %d %d %d", ring.Len(), boot.Len(), none.Len())
	}
}

func hashOf(key string) [32]byte {
	r := NewKeyRing([]APIKey{{Workspace: "x", Key: key}}, nil)
	for h := range r.byHash {
		return h
	}
	panic("empty ring")
}

// FuzzParseAPIKeys: no spec panics; an error never echoes a key; every
// parsed entry has a valid workspace and a key of at least 16 characters
// without spaces or control characters, and no key repeats.
func FuzzParseAPIKeys(f *testing.F) {
	for _, s := range []string{"", "acme:0123456789abcdef", "acme:0123456789abcdef, other:fedcba9876543210",
		"acme0123456789abcdef", "acme:short", "ac me:0123456789abcdef", ":0123456789abcdef", "a:b:0123456789abcdef",
		"acme:0123456789abcdef,,", "acme:0123456789abcdef,acme:0123456789abcdef", "acme:0123456789abcde\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		keys, err := ParseAPIKeys(spec)
		if err != nil {
			for _, entry := range strings.Split(spec, ",") {
				if _, key, ok := strings.Cut(strings.TrimSpace(entry), ":"); ok && len(key) >= 16 && strings.Contains(err.Error(), key) {
					t.Fatalf("error %q echoes a key", err)
				}
			}
			return
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if events.ValidateWorkspace(k.Workspace) != nil || len(k.Key) < 16 || seen[k.Key] ||
				strings.ContainsFunc(k.Key, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
				t.Fatalf("accepted %+v from %q", k, spec)
			}
			seen[k.Key] = true
		}
		ring := NewKeyRing(keys, nil)
		for _, k := range keys {
			if ws, ok := ring.Resolve(k.Key); !ok || ws != k.Workspace {
				t.Fatalf("parsed key does not resolve to %s", k.Workspace)
			}
		}
	})
}
