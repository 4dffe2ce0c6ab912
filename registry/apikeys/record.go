package apikeys

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/webhookd/webhookd/events"
)

const (
	// KeyPrefix starts every key this package issues: "whk_" and 43
	// base64url characters (32 random bytes).
	KeyPrefix = "whk_"
	// IDPrefix starts every key id: "ak_" and 16 lowercase hex digits
	// (8 random bytes). The id is public: it names the key in lists, logs
	// and revocations, and says nothing about the key itself.
	IDPrefix = "ak_"

	keyRandomBytes = 32
	keyLen         = len(KeyPrefix) + 43 // base64url without padding of 32 bytes
	idRandomBytes  = 8
	idLen          = len(IDPrefix) + 2*idRandomBytes
	// maxRecordBytes bounds what ParseRecord reads; a real record is
	// about 250 bytes.
	maxRecordBytes = 4 << 10
)

// Sentinel errors. Every error of this package wraps one of them (or a
// NATS error for transport failures).
var (
	// ErrMalformed: a bucket entry is not a record this package wrote.
	ErrMalformed = errors.New("apikeys: malformed key record")
	// ErrNotFound: no key has that id.
	ErrNotFound = errors.New("apikeys: no such key")
	// ErrInvalid: a workspace or expiry given to Create is unusable.
	ErrInvalid = errors.New("apikeys: invalid argument")
	// ErrTooManyKeys: the workspace already has Config.MaxActivePerWorkspace
	// active keys; revoke one first.
	ErrTooManyKeys = errors.New("apikeys: too many active keys for the workspace")
	// ErrUnavailable: the bucket cannot be reached (NATS down or not bound).
	ErrUnavailable = errors.New("apikeys: the shared key bucket is unavailable")
)

// State is a key's standing at a given time.
type State string

const (
	Active  State = "active"
	Expired State = "expired"
	Revoked State = "revoked"
)

// Record is one API key as stored in the bucket, under its ID. It holds
// the SHA-256 of the key, never the key: the key is shown once, by Create.
//
// Why SHA-256 and not bcrypt/scrypt/argon2: those slow, salted hashes exist
// to protect low-entropy secrets (passwords) against offline guessing. These
// keys are 256 random bits; no hash speed makes guessing one feasible, so a
// slow hash would buy nothing while costing tens of milliseconds of CPU on
// every API request, and salting would make the hash → record map lookup
// impossible (each record would have to be tried in turn).
type Record struct {
	ID        string `json:"id"`
	Workspace string `json:"workspace"`
	// Hash is the lowercase hex SHA-256 of the key.
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt is zero for a key that never expires.
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	Revoked   bool      `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revokedAt,omitzero"`
}

// StateAt reports whether the key is active, expired or revoked at now.
// Revocation wins over expiry.
func (r Record) StateAt(now time.Time) State {
	switch {
	case r.Revoked:
		return Revoked
	case !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt):
		return Expired
	}
	return Active
}

// ParseRecord decodes and validates the bucket entry stored under kvKey.
// Unknown JSON fields are ignored (newer versions may add some); anything
// that could make a record mean something it was not written to mean is
// ErrMalformed: an id that differs from the entry's key, a bad workspace,
// a hash that is not 64 lowercase hex digits, a missing creation time,
// an expiry not after creation, or a revocation flag without its time
// (or the reverse).
func ParseRecord(kvKey string, data []byte) (Record, error) {
	if len(data) > maxRecordBytes {
		return Record{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(data))
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := r.validate(); err != nil {
		return Record{}, err
	}
	if r.ID != kvKey {
		return Record{}, fmt.Errorf("%w: stored under %q but names itself %q", ErrMalformed, kvKey, r.ID)
	}
	return r, nil
}

func (r Record) validate() error {
	switch {
	case !ValidID(r.ID):
		return fmt.Errorf("%w: bad id", ErrMalformed)
	case events.ValidateWorkspace(r.Workspace) != nil:
		return fmt.Errorf("%w: bad workspace", ErrMalformed)
	case !validHash(r.Hash):
		return fmt.Errorf("%w: bad hash", ErrMalformed)
	case r.CreatedAt.IsZero():
		return fmt.Errorf("%w: no creation time", ErrMalformed)
	case !r.ExpiresAt.IsZero() && !r.ExpiresAt.After(r.CreatedAt):
		return fmt.Errorf("%w: expiry not after creation", ErrMalformed)
	case r.Revoked != !r.RevokedAt.IsZero():
		return fmt.Errorf("%w: revoked flag and time disagree", ErrMalformed)
	}
	return nil
}

// encode is the bucket's value for r.
func (r Record) encode() ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("apikeys: encode %s: %w", r.ID, err)
	}
	return b, nil
}

// hashBytes returns the record's hash as bytes; the record is validated.
func (r Record) hashBytes() [32]byte {
	var h [32]byte
	_, _ = hex.Decode(h[:], []byte(r.Hash))
	return h
}

// ValidID reports whether s has the shape of a key id ("ak_" + 16
// lowercase hex digits).
func ValidID(s string) bool {
	return len(s) == idLen && strings.HasPrefix(s, IDPrefix) && isLowerHex(s[len(IDPrefix):])
}

// LooksLikeKey reports whether s has the shape of a key this package
// issues. It is a cheap filter, not a check of validity.
func LooksLikeKey(s string) bool {
	if len(s) != keyLen || !strings.HasPrefix(s, KeyPrefix) {
		return false
	}
	for i := len(KeyPrefix); i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validHash(s string) bool { return len(s) == 2*sha256.Size && isLowerHex(s) }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// hashKey is the hash a record stores for key.
func hashKey(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// newKey returns a fresh id and key.
func newKey() (id, key string, err error) {
	var raw [idRandomBytes + keyRandomBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", "", fmt.Errorf("apikeys: random: %w", err)
	}
	id = IDPrefix + hex.EncodeToString(raw[:idRandomBytes])
	key = KeyPrefix + base64.RawURLEncoding.EncodeToString(raw[idRandomBytes:])
	return id, key, nil
}
