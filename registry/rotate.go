package registry

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"
)

// Bounds of a secret rotation's grace period.
const (
	// DefaultRotationGrace is how long the replaced secret keeps signing
	// when the caller names no grace period.
	DefaultRotationGrace = 24 * time.Hour
	// MaxRotationGrace bounds the grace period: an old secret must not
	// sign for long after its owner asked to replace it.
	MaxRotationGrace = 7 * 24 * time.Hour
)

// FieldGrace names the grace period in a rotation's *ValidationError (the
// JSON name of the API).
const FieldGrace = "grace"

// CheckGrace returns why grace is not a valid rotation grace period, or
// "" when it is: 0 (no overlap) to MaxRotationGrace.
func CheckGrace(grace time.Duration) string {
	if grace < 0 || grace > MaxRotationGrace {
		return fmt.Sprintf("must be between 0s and %s", MaxRotationGrace)
	}
	return ""
}

// RotateSecret gives the workspace's webhook a fresh signing secret. The
// secret it replaces becomes PreviousSecret and keeps signing deliveries,
// next to the new one, until now+grace (PreviousSecretUntil), so that a
// receiver can switch to the new secret without rejecting a delivery;
// grace 0 drops the old secret at once. A previous secret from an earlier
// rotation is dropped: at most two secrets sign. It goes through the one
// read-modify-write path (update), as Patch does.
//
// Errors: *ValidationError (grace outside 0..MaxRotationGrace, or the
// rotated webhook failing the journal entry rules), ErrNotFound (unknown
// id or another workspace's), ErrUnavailable (the shared registry cannot
// be written).
func (s *Store) RotateSecret(ctx context.Context, workspace, id string, grace time.Duration, now time.Time) (Webhook, error) {
	if msg := CheckGrace(grace); msg != "" {
		return Webhook{}, fmt.Errorf("registry: rotate secret %s: %w", id, &ValidationError{Fields: map[string]string{FieldGrace: msg}})
	}
	if ws, ok := s.ix.workspaceOf(id); !ok || ws != workspace {
		// As Enable: probing other workspaces' ids costs no journal round
		// trip; change checks again on the journal's copy.
		return Webhook{}, fmt.Errorf("registry: rotate secret %s: %w", id, ErrNotFound)
	}
	secret, err := newSecret()
	if err != nil {
		return Webhook{}, fmt.Errorf("registry: rotate secret %s: %w", id, err)
	}
	until := now.UTC().Add(grace).Truncate(time.Millisecond)
	w, _, err := s.update(ctx, id, func(w *Webhook) error {
		// change may run more than once: every run starts from the
		// journal's current copy, so the secret replaced is the current one.
		if w.Workspace != workspace {
			return ErrNotFound
		}
		if grace > 0 {
			w.PreviousSecret, w.PreviousSecretUntil = w.Secret, until
		} else {
			w.PreviousSecret, w.PreviousSecretUntil = "", time.Time{}
		}
		w.Secret = secret
		return s.validator.validWebhook(w)
	})
	if err != nil {
		return Webhook{}, fmt.Errorf("registry: rotate secret %s: %w", id, err)
	}
	return w, nil
}

// InGrace reports whether w's previous secret still signs at now.
func (w Webhook) InGrace(now time.Time) bool {
	return w.PreviousSecret != "" && now.Before(w.PreviousSecretUntil)
}

// newSecret returns "whsec_" + base64 of 32 random bytes, as New makes.
func newSecret() (string, error) {
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return "", fmt.Errorf("secret: %w", err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key[:]), nil
}
