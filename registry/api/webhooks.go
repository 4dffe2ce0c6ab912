package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/webhookd/webhookd/registry"
	"github.com/webhookd/webhookd/registry/health"
)

// webhookView is a subscription on the wire. workflowId and enabled are
// always present (workflowId "" meaning every workflow); disabledReason and
// disabledAt only while it is disabled, description only when set. It has no secret field, so that
// no list, get or enable answer can carry one: only createdView and
// secretView do.
type webhookView struct {
	ID             string     `json:"id"`
	URL            string     `json:"url"`
	EventType      string     `json:"eventType"`
	WorkflowID     string     `json:"workflowId"`
	CreatedAt      string     `json:"createdAt"`
	Enabled        bool       `json:"enabled"`
	DisabledReason string     `json:"disabledReason,omitempty"`
	DisabledAt     string     `json:"disabledAt,omitempty"`
	Description    string     `json:"description,omitempty"`
	Health         healthView `json:"health"`
}

func viewOf(w registry.Webhook, h health.Record) webhookView {
	v := webhookView{
		ID:          w.ID,
		URL:         w.URL,
		EventType:   string(w.EventType),
		WorkflowID:  w.WorkflowID,
		CreatedAt:   w.CreatedAt.UTC().Format(time.RFC3339),
		Enabled:     !w.Disabled,
		Description: w.Description,
		Health:      healthViewOf(h),
	}
	if w.Disabled {
		v.DisabledReason = w.DisabledReason
		v.DisabledAt = formatHealthTime(w.DisabledAt)
	}
	return v
}

// createdView is the create answer: the view plus the signing secret.
type createdView struct {
	webhookView
	Secret string `json:"secret"`
}

// secretView is the answer of GET /api/webhook/{id}/secret: the secret
// and, while a rotation's grace period runs, the replaced secret that
// still signs and when it stops.
type secretView struct {
	Secret                  string `json:"secret"`
	PreviousSecret          string `json:"previousSecret,omitempty"`
	PreviousSecretExpiresAt string `json:"previousSecretExpiresAt,omitempty"`
}

func secretViewOf(w registry.Webhook, now time.Time) secretView {
	v := secretView{Secret: w.Secret}
	if w.InGrace(now) {
		v.PreviousSecret, v.PreviousSecretExpiresAt = w.PreviousSecret, formatHealthTime(w.PreviousSecretUntil)
	}
	return v
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) error {
	body, err := checkJSONBody(w, r, s.maxBodyBytes)
	if err != nil {
		return err
	}
	in, err := decodeCreate(body)
	if err != nil {
		var ae *apiError
		if !errors.As(err, &ae) || ae.Code != codeValidationFailed {
			return err
		}
		// Wrong JSON types were found; validate the other fields too so the
		// client learns about every bad field in one round trip.
		return mergeValidation(ae, s.validateCreate(in))
	}
	if err := s.validateCreate(in); err != nil {
		return err
	}
	ws := workspaceFrom(r.Context())
	hook, err := registry.New(ws, in.Input, time.Now())
	if err != nil {
		return fmt.Errorf("new webhook: %w", err)
	}
	hook.Description = in.Description
	if err := s.store.Create(r.Context(), hook); err != nil {
		return fmt.Errorf("create webhook %s: %w", hook.ID, err)
	}
	s.log.InfoContext(r.Context(), "webhook created",
		"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", hook.ID, "event_type", string(hook.EventType))
	// A new webhook has no delivery history: healthy by definition.
	writeSuccess(w, createdView{webhookView: viewOf(hook, health.Record{}), Secret: hook.Secret}, "")
	return nil
}

// validateCreate checks a create request with the Validator and the
// description rule, naming every bad field in one *ValidationError.
func (s *Server) validateCreate(in createRequest) error {
	err := s.validator.Validate(in.Input)
	msg := registry.CheckDescription(in.Description)
	if msg == "" {
		return err
	}
	var ve *registry.ValidationError
	if err == nil {
		ve = &registry.ValidationError{Fields: map[string]string{}}
	} else if !errors.As(err, &ve) {
		return err
	}
	ve.Fields[registry.FieldDescription] = msg
	return ve
}

// mergeValidation adds the validator's findings to a type-error 422 without
// overwriting it: a field of the wrong type was decoded as "", which the
// validator would misreport as missing.
func mergeValidation(typeErr *apiError, verr error) error {
	if verr == nil {
		return typeErr
	}
	var ve *registry.ValidationError
	if !errors.As(verr, &ve) {
		return verr
	}
	for field, msg := range ve.Fields {
		if _, taken := typeErr.Details[field]; !taken {
			typeErr.Details[field] = msg
		}
	}
	return typeErr
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	limit, err := parseLimit(r, defaultListLimit)
	if err != nil {
		return err
	}
	hooks, next, err := s.store.List(r.Context(), workspaceFrom(r.Context()), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		return fmt.Errorf("list webhooks: %w", err)
	}
	views := make([]webhookView, len(hooks)) // never null on the wire
	for i, h := range hooks {
		views[i] = viewOf(h, s.healthOf(h.ID))
	}
	writeSuccess(w, views, next)
	return nil
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	hook, err := s.store.Get(r.Context(), workspaceFrom(r.Context()), id)
	if err != nil {
		return fmt.Errorf("get webhook %s: %w", id, err)
	}
	writeSuccess(w, viewOf(hook, s.healthOf(id)), "")
	return nil
}

// getSecret is the one read of a webhook's signing secret after its
// creation (as Svix's GET …/secret). Each read is logged, without the
// secret, so that an operator can see who fetched one.
func (s *Server) getSecret(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	ws := workspaceFrom(r.Context())
	hook, err := s.store.Get(r.Context(), ws, id)
	if err != nil {
		return fmt.Errorf("get webhook secret %s: %w", id, err)
	}
	s.log.InfoContext(r.Context(), "webhook secret read",
		"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", id)
	writeSuccess(w, secretViewOf(hook, time.Now()), "")
	return nil
}

// enableWebhook turns a disabled webhook back on (enabling an enabled one
// is a no-op) and resets its health, so that an auto-disabled webhook
// starts a fresh run instead of being disabled again at once for its old
// failures. The route takes no body.
func (s *Server) enableWebhook(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	ws := workspaceFrom(r.Context())
	hook, err := s.store.Enable(r.Context(), ws, id)
	if err != nil {
		return fmt.Errorf("enable webhook %s: %w", id, err)
	}
	s.resetHealth(r, ws, id, "webhook enabled but its health could not be reset")
	s.log.InfoContext(r.Context(), "webhook enabled",
		"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", id)
	writeSuccess(w, viewOf(hook, s.healthOf(id)), "")
	return nil
}

// resetHealth forgets the webhook's delivery health (circuit, failure
// run), so that an enabled or re-pointed webhook starts afresh instead of
// being disabled again at once for its old failures. A failure is logged
// as warning, not returned: the change asked for is made, and a stale
// health record costs at worst one more disable.
func (s *Server) resetHealth(r *http.Request, ws, id, warning string) {
	if s.health == nil {
		return
	}
	if err := s.health.Reset(r.Context(), id); err != nil {
		s.log.WarnContext(r.Context(), warning,
			"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", id, "err", err)
	}
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	ws := workspaceFrom(r.Context())
	if err := s.store.Delete(r.Context(), ws, id); err != nil {
		return fmt.Errorf("delete webhook %s: %w", id, err)
	}
	if f, ok := s.failures.(failureForgetter); ok {
		if err := f.Forget(r.Context(), id); err != nil {
			// The webhook is deleted, which is what was asked; its
			// records can no longer be listed and age out of the log.
			s.log.WarnContext(r.Context(), "webhook deleted but its failure records could not be forgotten",
				"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", id, "err", err)
		}
	}
	s.log.InfoContext(r.Context(), "webhook deleted",
		"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", id)
	writeSuccess(w, map[string]any{"id": id, "deleted": true}, "")
	return nil
}
