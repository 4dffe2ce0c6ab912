package registry

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// sealedPrefix marks a secret encrypted at rest: "enc:v1:<key id>:<base64
// of nonce and ciphertext>". The key id lets several keys coexist during a
// rotation.
const sealedPrefix = "enc:v1:"

// ErrSealed: the registry holds encrypted secrets but no key that opens them.
var ErrSealed = errors.New("registry: webhook secrets are encrypted with a key that was not given")

// Sealer encrypts webhook signing secrets at rest with AES-256-GCM. The
// first key seals; every key opens, so a rotation is: put the new key first,
// keep the old one after it, restart (every secret is re-sealed with the new
// key at Open), then drop the old key. Instances sharing a registry must
// all be able to open the new key before any puts it first (see
// registry/replica for how the shared copy follows).
type Sealer struct {
	ids   []string // ids[0] is the sealing key
	aeads map[string]cipher.AEAD
}

// ParseEncryptionKeys reads comma-separated keys, each 32 bytes in standard
// or URL-safe base64, or 64 hex digits. Errors name the position, never the key.
func ParseEncryptionKeys(spec string) ([][]byte, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	var keys [][]byte
	for i, s := range strings.Split(spec, ",") {
		s = strings.TrimSpace(s)
		var k []byte
		var err error
		switch {
		case len(s) == 64:
			k, err = hex.DecodeString(s)
		default:
			k, err = base64.StdEncoding.DecodeString(s)
			if err != nil {
				k, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
			}
		}
		if err != nil || len(k) != 32 {
			return nil, fmt.Errorf("encryption key %d must be 32 bytes in base64 or hex (e.g. openssl rand -base64 32)", i+1)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// NewSealer builds a Sealer; keys[0] seals. No keys: nil, meaning secrets
// are stored as they are.
func NewSealer(keys [][]byte) (*Sealer, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	s := &Sealer{aeads: make(map[string]cipher.AEAD, len(keys))}
	for i, k := range keys {
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("registry: encryption key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("registry: encryption key %d: %w", i+1, err)
		}
		sum := sha256.Sum256(k)
		id := hex.EncodeToString(sum[:4])
		if _, dup := s.aeads[id]; dup {
			return nil, fmt.Errorf("registry: encryption key %d repeats an earlier key", i+1)
		}
		s.ids = append(s.ids, id)
		s.aeads[id] = aead
	}
	return s, nil
}

// seal encrypts a secret with the sealing key; the key id is bound in as
// additional data so a ciphertext cannot be replayed under another id.
func (s *Sealer) seal(plain string) (string, error) {
	id := s.ids[0]
	aead := s.aeads[id]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("registry: seal: %w", err)
	}
	out := aead.Seal(nonce, nonce, []byte(plain), []byte(id))
	return sealedPrefix + id + ":" + base64.RawStdEncoding.EncodeToString(out), nil
}

// open decrypts a stored secret. needsReseal reports a plaintext secret or
// one sealed with an older key.
func (s *Sealer) open(stored string) (plain string, needsReseal bool, err error) {
	if !strings.HasPrefix(stored, sealedPrefix) {
		return stored, s != nil, nil
	}
	if s == nil {
		return "", false, ErrSealed
	}
	id, b64, ok := strings.Cut(stored[len(sealedPrefix):], ":")
	aead := s.aeads[id]
	if !ok || aead == nil {
		return "", false, fmt.Errorf("%w (key id %s)", ErrSealed, id)
	}
	raw, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil || len(raw) < aead.NonceSize()+aead.Overhead() {
		return "", false, errors.New("registry: sealed secret is corrupt")
	}
	p, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], []byte(id))
	if err != nil {
		return "", false, errors.New("registry: sealed secret does not authenticate (wrong key or corrupt)")
	}
	return string(p), id != s.ids[0], nil
}

// SealedWithOtherKey reports whether stored webhook bytes hold a secret
// sealed with a key other than the first (false without a Sealer): one a
// shared registry still has to re-seal after a rotation. It reads the key
// ids only; nothing is decrypted.
func (s *Store) SealedWithOtherKey(value []byte) bool {
	if s.sealer == nil {
		return false
	}
	prefix := []byte(`"` + sealedPrefix)
	own := []byte(`"` + sealedPrefix + s.sealer.ids[0] + ":")
	for rest := value; ; {
		i := bytes.Index(rest, prefix)
		if i < 0 {
			return false
		}
		if !bytes.HasPrefix(rest[i:], own) {
			return true
		}
		rest = rest[i+len(own):]
	}
}
