package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/webhookd/webhookd/registry"
)

// rotateFields are the JSON names a rotate-secret body may hold.
var rotateFields = []string{registry.FieldGrace}

// rotatedView is the answer of POST /api/webhook/{id}/rotate-secret: the
// new secret and when the replaced one stops signing (the rotation time
// itself for grace 0).
type rotatedView struct {
	Secret                  string `json:"secret"`
	PreviousSecretExpiresAt string `json:"previousSecretExpiresAt"`
}

// decodeRotate parses a rotate-secret body: {"grace":"<Go duration>"},
// the member optional (absent or null: registry.DefaultRotationGrace).
// Errors are *apiErrors: 400 INVALID_JSON, 400 UNKNOWN_FIELD, 413
// BODY_TOO_LARGE, or 422 VALIDATION_FAILED naming grace when it is not a
// duration string in 0..registry.MaxRotationGrace.
func decodeRotate(body []byte) (time.Duration, error) {
	obj, err := decodeObject(bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	if ae := unknownFields(obj, rotateFields, "is not a field of a secret rotation; known: grace"); ae != nil {
		return 0, ae
	}
	raw, ok := obj[registry.FieldGrace]
	if !ok || bytes.Equal(raw, []byte("null")) {
		return registry.DefaultRotationGrace, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, validationError(map[string]string{registry.FieldGrace: `must be a duration string such as "24h" or "90m"`})
	}
	grace, err := time.ParseDuration(s)
	if err != nil {
		return 0, validationError(map[string]string{registry.FieldGrace: `must be a duration string such as "24h" or "90m"`})
	}
	if msg := registry.CheckGrace(grace); msg != "" {
		return 0, validationError(map[string]string{registry.FieldGrace: msg})
	}
	return grace, nil
}

// rotateSecret replaces the webhook's signing secret. The body is
// optional; the old secret keeps signing, next to the new one, for the
// grace period (see registry.Store.RotateSecret). Each rotation is logged,
// without either secret.
func (s *Server) rotateSecret(w http.ResponseWriter, r *http.Request) error {
	grace := registry.DefaultRotationGrace
	if r.ContentLength != 0 {
		raw, err := readJSONBody(w, r, s.maxBodyBytes)
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(raw)) > 0 {
			if grace, err = decodeRotate(raw); err != nil {
				return err
			}
		}
	}
	id := r.PathValue("id")
	ws := workspaceFrom(r.Context())
	now := time.Now()
	hook, err := s.store.RotateSecret(r.Context(), ws, id, grace, now)
	if err != nil {
		return fmt.Errorf("rotate webhook secret %s: %w", id, err)
	}
	expires := hook.PreviousSecretUntil
	if expires.IsZero() {
		expires = now
	}
	s.log.InfoContext(r.Context(), "webhook secret rotated",
		"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", id, "grace", grace.String())
	writeSuccess(w, rotatedView{Secret: hook.Secret, PreviousSecretExpiresAt: formatHealthTime(expires)}, "")
	return nil
}
