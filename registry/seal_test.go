package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func sealer(t *testing.T, keys ...[]byte) *Sealer {
	t.Helper()
	s, err := NewSealer(keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSecretsEncryptedAtRest covers migration from plaintext, rotation to
// a new key, and the refusals: no key, wrong key.
func TestSecretsEncryptedAtRest(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "r.db")
	k1, k2 := randomKey(t), randomKey(t)

	// 1. Written in plaintext (no key yet).
	s, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	w := mustCreate(t, s, "acme", "workflowRun.completed", "")
	s.Close()
	if raw, _ := os.ReadFile(path); !bytes.Contains(raw, []byte(w.Secret)) {
		t.Fatal("test premise: secret should be in plaintext before encryption is on")
	}

	// 2. Opening with a key seals every secret; reads still see plaintext.
	s, err = Open(Config{Path: path, Sealer: sealer(t, k1)})
	if err != nil {
		t.Fatal(err)
	}
	w2 := mustCreate(t, s, "acme", "workflowRun.failed", "")
	if got, _ := s.Get(ctx, "acme", w.ID); got.Secret != w.Secret {
		t.Error("Get does not return the opened secret")
	}
	if ix, _ := s.Index().Get(w2.ID); ix.Secret != w2.Secret {
		t.Error("index does not hold the opened secret")
	}
	s.Close()
	raw, _ := os.ReadFile(path)
	for _, sec := range []string{w.Secret, w2.Secret, "whsec_"} {
		if bytes.Contains(raw, []byte(sec)) {
			t.Errorf("bbolt file holds %q in plaintext", sec)
		}
	}

	// 3. No key, or the wrong key: refused clearly.
	if _, err := Open(Config{Path: path}); !errors.Is(err, ErrSealed) {
		t.Errorf("open without key: %v", err)
	}
	if _, err := Open(Config{Path: path, Sealer: sealer(t, k2)}); !errors.Is(err, ErrSealed) {
		t.Errorf("open with an unknown key: %v", err)
	}

	// 4. Rotation: new key first, old key after; then the old key can go.
	s, err = Open(Config{Path: path, Sealer: sealer(t, k2, k1)})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(Config{Path: path, Sealer: sealer(t, k2)})
	if err != nil {
		t.Fatalf("after rotation the new key alone must open: %v", err)
	}
	defer s.Close()
	if got, _ := s.Get(ctx, "acme", w2.ID); got.Secret != w2.Secret {
		t.Error("secret changed across rotation")
	}
}

func TestParseEncryptionKeys(t *testing.T) {
	k := randomKey(t)
	good := base64.StdEncoding.EncodeToString(k) + "," + base64.RawURLEncoding.EncodeToString(k) + ",  " +
		"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	keys, err := ParseEncryptionKeys(good)
	if err != nil || len(keys) != 3 {
		t.Fatalf("%v %v", keys, err)
	}
	if _, err := NewSealer(keys); err == nil {
		t.Error("repeated key accepted")
	}
	for _, bad := range []string{"short", base64.StdEncoding.EncodeToString(k[:16]), "zz" + good} {
		_, err := ParseEncryptionKeys(bad)
		if err == nil {
			t.Errorf("%q accepted", bad)
		} else if bytes.Contains([]byte(err.Error()), []byte(bad[:4])) && len(bad) > 8 {
			t.Errorf("error echoes key material: %v", err)
		}
	}
}

// TestSealedWithOtherKey: stored bytes are told apart by the key ids of
// their sealed secrets, the previous secret's included.
func TestSealedWithOtherKey(t *testing.T) {
	k1, k2 := make([]byte, 32), make([]byte, 32)
	k2[0] = 1
	open := func(keys ...[]byte) *Store {
		sealer, err := NewSealer(keys)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(Config{Path: filepath.Join(t.TempDir(), "r.db"), Sealer: sealer})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	old, cur := open(k1), open(k2, k1)
	w, err := New("acme", Input{URL: "https://e.example/", EventType: "workflowRun.completed"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	w.PreviousSecret, w.PreviousSecretUntil = w.Secret, time.Now().Add(time.Hour)
	byOld, err := old.Encode(w)
	if err != nil {
		t.Fatal(err)
	}
	byCur, err := cur.Encode(w)
	if err != nil {
		t.Fatal(err)
	}
	if !cur.SealedWithOtherKey(byOld) || cur.SealedWithOtherKey(byCur) {
		t.Fatalf("with k2 first: old bytes %v (want true), current bytes %v (want false)",
			cur.SealedWithOtherKey(byOld), cur.SealedWithOtherKey(byCur))
	}
	// Only the previous secret still under k1.
	mixed := strings.Replace(string(byCur), `"previousSecret":"enc:v1:`+cur.SealingKeyID(), `"previousSecret":"enc:v1:`+old.SealingKeyID(), 1)
	if mixed == string(byCur) || !cur.SealedWithOtherKey([]byte(mixed)) {
		t.Fatal("a previous secret under another key went unnoticed")
	}
}
