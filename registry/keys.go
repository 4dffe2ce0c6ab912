package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/webhookd/webhookd/events"
)

// APIKey is a key given in configuration, before hashing.
type APIKey struct {
	Workspace string
	Key       string
}

// StoredKey is a key as persisted: its SHA-256 only.
type StoredKey struct {
	Workspace string
	Hash      [32]byte
}

// ParseAPIKeys parses "workspace:key,workspace:key". Errors name the
// entry's position, never the key.
func ParseAPIKeys(spec string) ([]APIKey, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	var out []APIKey
	seen := map[string]bool{}
	for i, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		ws, key, ok := strings.Cut(entry, ":")
		if !ok {
			return nil, fmt.Errorf("entry %d is not workspace:key", i+1)
		}
		if events.ValidateWorkspace(ws) != nil {
			// Not quoted: an entry written key:workspace would put the
			// key here, and errors reach logs and terminals.
			return nil, fmt.Errorf("entry %d: the workspace id must be 1 to 64 of letters, digits, '_' and '-'", i+1)
		}
		if len(key) < 16 {
			return nil, fmt.Errorf("entry %d: key must be at least 16 characters", i+1)
		}
		if strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return nil, fmt.Errorf("entry %d: key must not contain spaces or control characters", i+1)
		}
		if seen[key] {
			return nil, fmt.Errorf("entry %d: key repeats an earlier entry", i+1)
		}
		seen[key] = true
		out = append(out, APIKey{Workspace: ws, Key: key})
	}
	return out, nil
}

// KeyRing resolves API keys to workspaces. It holds hashes only. A nil
// *KeyRing holds no key. Build one ring for the configured keys and another
// for the bootstrap key, so that registry/api.KeySet can retire the latter.
type KeyRing struct {
	byHash map[[32]byte]ringEntry
}

type ringEntry struct {
	hash      [32]byte
	workspace string
}

// NewKeyRing builds a ring from configured and stored keys.
func NewKeyRing(keys []APIKey, stored []StoredKey) *KeyRing {
	k := &KeyRing{byHash: make(map[[32]byte]ringEntry, len(keys)+len(stored))}
	for _, s := range stored {
		k.byHash[s.Hash] = ringEntry{s.Hash, s.Workspace}
	}
	for _, c := range keys {
		h := sha256.Sum256([]byte(c.Key))
		k.byHash[h] = ringEntry{h, c.Workspace}
	}
	return k
}

// Lookup returns the key's workspace. The key is hashed first, so the map
// lookup's timing says nothing about the secret, and the match is confirmed
// with a constant-time comparison.
func (k *KeyRing) Lookup(key string) (string, bool) {
	if k == nil || key == "" {
		return "", false
	}
	h := sha256.Sum256([]byte(key))
	e, ok := k.byHash[h]
	if !ok || subtle.ConstantTimeCompare(e.hash[:], h[:]) != 1 {
		return "", false
	}
	return e.workspace, true
}

// Resolve is Lookup under the name registry/api.KeyResolver asks for.
func (k *KeyRing) Resolve(key string) (string, bool) { return k.Lookup(key) }

// Len reports how many keys the ring holds.
func (k *KeyRing) Len() int {
	if k == nil {
		return 0
	}
	return len(k.byHash)
}

// StoredKeys returns the persisted (bootstrap) keys.
func (s *Store) StoredKeys(ctx context.Context) ([]StoredKey, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []StoredKey
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAPIKeys).ForEach(func(k, v []byte) error {
			if len(k) != 32 {
				return errors.New("api key record with a bad hash length")
			}
			var sk StoredKey
			copy(sk.Hash[:], k)
			sk.Workspace = string(v)
			out = append(out, sk)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("registry: api keys: %w", err)
	}
	return out, nil
}

// BootstrapWorkspace is the workspace of the key created on first start.
const BootstrapWorkspace = "default"

// Bootstrap creates the first API key when none is stored: it keeps the
// key's hash and writes the key itself to path (mode 0600), nowhere else.
// It reports whether it created one.
func (s *Store) Bootstrap(ctx context.Context, path string) (bool, error) {
	stored, err := s.StoredKeys(ctx)
	if err != nil {
		return false, err
	}
	if len(stored) > 0 {
		return false, nil
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return false, fmt.Errorf("registry: bootstrap key: %w", err)
	}
	key := "wk_" + base64.RawURLEncoding.EncodeToString(raw[:])
	if err := writeFileAtomic(path, []byte(key+"\n")); err != nil {
		return false, fmt.Errorf("registry: bootstrap key file: %w", err)
	}
	h := sha256.Sum256([]byte(key))
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAPIKeys).Put(h[:], []byte(BootstrapWorkspace))
	})
	if err != nil {
		return false, fmt.Errorf("registry: store bootstrap key: %w", err)
	}
	return true, nil
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".bootstrap-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
